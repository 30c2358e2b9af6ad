import time

from django.db import migrations


def seed(apps, schema_editor):
    Product = apps.get_model("catalog", "Product")
    using = schema_editor.connection.alias  # each database migrated gets its own rows
    for name in ("apple", "pear", "plum"):
        Product.objects.using(using).create(name=name, price=1)
    time.sleep(0.3)  # a data migration takes a moment


class Migration(migrations.Migration):
    dependencies = [("catalog", "0002_product_price")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
