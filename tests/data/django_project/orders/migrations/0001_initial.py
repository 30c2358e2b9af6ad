from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = [("catalog", "0001_initial")]
    operations = [
        migrations.CreateModel(
            name="Order",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "product",
                    models.ForeignKey(on_delete=models.deletion.CASCADE, to="catalog.product"),
                ),
            ],
        ),
    ]
