import os
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
SECRET_KEY = "tests-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "catalog", "orders"]

_PG = os.environ.get("TM_DJANGO_PG", "").split()
if _PG:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": _PG[0],
            "PORT": _PG[1],
            "USER": _PG[2],
            "NAME": _PG[3],
            "PASSWORD": _PG[4] if len(_PG) > 4 else "",
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(BASE / "app.sqlite3"),
            "TEST": {"NAME": str(BASE / "test_app.sqlite3")},
        }
    }

if os.environ.get("TM_DJANGO_SECOND"):  # a second database, for tests that name it
    DATABASES["other"] = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BASE / "other.sqlite3"),
        "TEST": {"NAME": str(BASE / "test_other.sqlite3")},
    }
