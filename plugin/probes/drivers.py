"""The database drivers by import name: those :mod:`.dbapi` records, and those it does not.

The worker hooks the import of each (:func:`~.imports.when_imported`): a recorded driver
loads the probe and is patched; a driver the probes do not wrap is named in one notice, so
a run whose lock waits go through it is not silently without them. Kept apart from
:mod:`.dbapi` (no imports here): the worker reads the names without loading the probe.
"""

from __future__ import annotations

RECORDED = ("sqlite3", "psycopg", "psycopg2", "pymysql", "MySQLdb")
"""Import names of the drivers :mod:`.dbapi` patches."""

UNRECORDED = {
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "aiomysql": "aiomysql",
    "asyncmy": "asyncmy",
    "mariadb": "mariadb (MariaDB Connector/Python)",
    "mysql.connector": "mysql.connector (MySQL Connector/Python)",
}
"""Import name -> how the notice names it: PostgreSQL and MySQL/MariaDB drivers whose
statements :mod:`.dbapi` does not see (SQLAlchemy's layer does, when it runs them)."""
