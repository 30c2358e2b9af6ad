"""Fixtures of one name defined in several places (a conftest.py, a module, a class):
the report's fixtures table says where each is defined, and only for those."""

from __future__ import annotations

import pytest

from .conftest import only_run
from .test_shared_setup import TIMEOUT, model, report, section

NAMESAKES = {
    "conftest.py": """
import time
import pytest

@pytest.fixture
def user():
    time.sleep(0.03)
    return "conftest"
""",
    "test_accounts.py": """
import time
import pytest

@pytest.fixture
def user():
    time.sleep(0.06)
    return "accounts"

def test_account(user):
    assert user == "accounts"
""",
    "sub/test_orders.py": """
import time
import pytest

class TestOrders:
    @pytest.fixture
    def user(self):
        time.sleep(0.09)
        return "orders"

    def test_order(self, user):
        assert user == "orders"

def test_plain(user):
    assert user == "conftest"

@pytest.fixture
def unique():
    time.sleep(0.02)

def test_unique(unique):
    pass
""",
}


def test_fixtures_of_one_name_say_where_each_is_defined(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # whole places
    for name, text in NAMESAKES.items():
        path = pytester.path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    result = pytester.runpytest_subprocess("--monitor", "-p", "no:xdist", timeout=TIMEOUT)
    result.assert_outcomes(passed=4)
    run = only_run(pytester)
    data = model(capsys, run)
    users = {f["baseid"]: f for f in data["fixtures"] if f["name"] == "user"}
    assert sorted(users) == ["", "sub/test_orders.py::TestOrders", "test_accounts.py"]
    assert all(f["namesakes"] == 2 for f in users.values())
    (unique,) = [f for f in data["fixtures"] if f["name"] == "unique"]
    assert unique["namesakes"] == 0

    table = section(report(capsys, run), "Fixtures by setup time").splitlines()
    assert table[0].split()[-2:] == ["defined", "in"], table
    rows = {line.split()[-1]: line for line in table[1:] if line.startswith("  user ")}
    assert sorted(rows) == [
        "plugin",  # the rootdir's conftest.py (or a plugin: pytest says no more)
        "sub/test_orders.py::TestOrders",
        "test_accounts.py",
    ], table
    assert rows["plugin"].endswith(" conftest.py or a plugin")
    (plain,) = [line for line in table if line.startswith("  unique ")]
    assert plain.rstrip().endswith("0s"), "a name of its own: no place said"
