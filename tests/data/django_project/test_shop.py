import pytest
from catalog.models import Product
from orders.models import Order


@pytest.mark.django_db
def test_seeded():
    assert sorted(Product.objects.values_list("name", flat=True)) == ["apple", "pear", "plum"]


@pytest.mark.django_db
def test_order():
    order = Order.objects.create(product=Product.objects.get(name="pear"), quantity=3)
    assert order.quantity == 3
    assert Order.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_transactional():
    Product.objects.create(name="kiwi")
    assert Product.objects.count() == 4


def test_no_database():
    assert True
