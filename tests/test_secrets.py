"""No secret reaches a run log or an export, whatever text carries it; pytest's own output
(the failure text the user reads) is never changed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testmon_live.plugin import events as ev
from testmon_live.plugin.redact import REDACTED, redact_args, redact_env, redact_text

from .conftest import only_run

# Every value here is a secret: none may appear in the log or an export.
URL_PW = "UrlPw5e3cret"
CONNINFO_PW = "ConnInfoPw77"
SQL_PW = "SqlPw4455xx"
KV_TOKEN = "KvTok3n998877"
KV_SECRET = "KvS3cretValue"
KV_API_KEY = "KvApiKey112233"
ARG_TOKEN = "TwoArgTok999"
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
GITHUB_PAT = "github_pat_11ABCDEFG0" + "x" * 40
AWS = "AKIA" + "IOSFODNN7EXAMPLE"
SLACK = "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
STRIPE = "sk_live_" + "51HqLyjWDarjtT1zdp7dcXYZ"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
ENV_SECRETS = {
    "GH_PAT": "EnvGhPatValue1",
    "STRIPE_SK": "EnvStripeSkValue2",
    "SENTRY_DSN": "https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/42",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/EnvSlackHookValue3",
    "DATABASE_URL": "postgresql://app:EnvDbPw4@db.internal:5432/app",
}
SECRETS = [
    URL_PW,
    CONNINFO_PW,
    SQL_PW,
    KV_TOKEN,
    KV_SECRET,
    KV_API_KEY,
    ARG_TOKEN,
    GITHUB,
    GITHUB_PAT,
    AWS,
    SLACK,
    STRIPE,
    JWT,
    "EnvGhPatValue1",
    "EnvStripeSkValue2",
    "0123456789abcdef0123456789abcdef",
    "EnvSlackHookValue3",
    "EnvDbPw4",
]

CONFTEST = """
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

def pytest_addoption(parser):
    parser.addoption("--token", default=None)
"""

SUITE = f'''
import sqlite3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def test_url_in_a_failure():
    url = "postgresql://app:{URL_PW}@db.internal:5432/app"
    assert url == "other", f"cannot reach {{url}}"


def test_conninfo_in_an_exception():
    raise ConnectionError(
        "connection failed: host=db port=5432 user=app password={CONNINFO_PW} sslmode=require"
    )


def test_sql():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE users (name TEXT, password TEXT)")
    db.execute("UPDATE users SET password = '{SQL_PW}' WHERE name = 'bob'")
    raise AssertionError("UPDATE users SET password = '{SQL_PW}' WHERE name = 'bob' failed")


def test_key_value_forms():
    raise ValueError("token={KV_TOKEN}&secret={KV_SECRET} api_key={KV_API_KEY}")


def test_two_argument_option():
    raise RuntimeError("ran deploy --token {ARG_TOKEN} --verbose")


@pytest.mark.parametrize("shape", [
    "{GITHUB}", "{GITHUB_PAT}", "{AWS}", "{SLACK}", "{STRIPE}", "{JWT}",
])
def test_token_shapes(shape):
    raise PermissionError(f"rejected credential {{shape}}")


@pytest.fixture
def database():
    raise ConnectionError("fixture: cannot connect to mysql://root:{URL_PW}@127.0.0.1/app")


def test_fixture_error(database):
    pass


def test_passes():
    pass
'''


def test_no_secret_reaches_the_log_or_the_junit_export(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INTERNAL_BUILD_HOST", "build-box-7.corp.example")
    monkeypatch.setenv("MY_SUITE_FLAG", "kept-because-listed")
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmonitor_env_keep = MY_SUITE_FLAG\n")
    pytester.makepyfile(test_secret=SUITE)
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", "--token", ARG_TOKEN)
    result.assert_outcomes(passed=1, failed=11, errors=1)
    shown = result.stdout.str()
    # pytest's own report is the user's: the monitor changes none of it
    for secret in (URL_PW, CONNINFO_PW, SQL_PW, KV_TOKEN, ARG_TOKEN, GITHUB, AWS, JWT):
        assert secret in shown, secret

    recorded = only_run(pytester)
    data = recorded.path.read_bytes()
    leaked = [s for s in SECRETS if s.encode() in data]
    assert not leaked, leaked
    assert REDACTED.encode() in data
    # the texts are still there around what was cut
    tests = recorded.tests_by_id()
    (url_test,) = tests["test_secret.py::test_url_in_a_failure"]
    assert "postgresql://app:***@db.internal:5432/app" in (url_test.message or "")
    shapes = [t for nodeid, runs in tests.items() if "test_token_shapes" in nodeid for t in runs]
    assert len(shapes) == 6
    assert all("rejected credential" in (t.message or "") for t in shapes)

    env = recorded.header.env
    assert "INTERNAL_BUILD_HOST" not in env, "the header keeps only what explains a run"
    assert "PATH" not in env
    assert env["MY_SUITE_FLAG"] == "kept-because-listed"
    assert env["DATABASE_URL"] == "postgresql://app:***@db.internal:5432/app"
    assert "PYTEST_ADDOPTS" in env
    assert ARG_TOKEN not in " ".join(recorded.header.args)

    # files: 0600 logs in a 0700 folder
    mdir = pytester.path / ".testmon"
    assert stat.S_IMODE(mdir.stat().st_mode) == 0o700
    assert stat.S_IMODE(recorded.path.stat().st_mode) == 0o600

    junit = subprocess.run(
        [sys.executable, "-m", "testmon_live.tui.cli", "export", "--format", "junit", "-o", "-"],
        cwd=pytester.path,
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    assert b"<testcase" in junit
    leaked = [s for s in SECRETS if s.encode() in junit]
    assert not leaked, leaked
    subprocess.run(
        [sys.executable, "-m", "testmon_live.tui.cli", "export", "--format", "junit"],
        cwd=pytester.path,
        capture_output=True,
        check=True,
        timeout=120,
    )
    (exported,) = (mdir / "exports").iterdir()
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    assert stat.S_IMODE(exported.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("host=h password=pw user=u", "host=h password=*** user=u"),
        ("host=h password='p w' user=u", "host=h password=*** user=u"),
        ("GH_TOKEN=abc", "GH_TOKEN=***"),
        ("curl --token abc --x", "curl --token *** --x"),
        ("--password=abc", "--password=***"),
        ("use ghp_" + "a" * 36 + " now", "use ghp_*** now"),
        ("key " + AWS, "key AKIA***"),
        (STRIPE, "sk_live_***"),
        ("sk_test_" + "a" * 24, "sk_test_***"),
        (SLACK, "xoxb-***"),
        ("Bearer " + JWT, "Bearer ***"),
        ("https://hooks.slack.com/services/T0/B0/xyz", "https://hooks.slack.com/services/***"),
        # no secret: unchanged
        ("assert 1 == 2", "assert 1 == 2"),
        ("postgresql://postgres@127.0.0.1/test", "postgresql://postgres@127.0.0.1/test"),
        ("tokens: 3, keys: 4", "tokens: 3, keys: 4"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redacted_json_stays_json() -> None:
    from testmon_live.plugin.redact import redact_bytes

    message = 'a "quoted" password="pw\\" x" and \\n token=\'t\' ' + JWT + "\nnext line"
    event = ev.TestFinished(w="gw0", nodeid="t::x", outcome="failed", message=message)
    line = ev.encode_line(event)
    redacted = redact_bytes(line)
    decoded = ev.decode_event(redacted)
    assert isinstance(decoded, ev.TestFinished)
    assert JWT not in (decoded.message or "")
    assert "'t'" not in (decoded.message or "")
    assert decoded.message is not None
    assert decoded.message.endswith("\nnext line")
    clean = ev.encode_line(ev.TestFinished(w="gw0", nodeid="t::x", outcome="passed"))
    assert redact_bytes(clean) is clean


def test_two_argument_options_and_secret_names() -> None:
    assert redact_args(["--token", "abc", "-k", "x", "--db-password", "pw"]) == [
        "--token",
        REDACTED,
        "-k",
        "x",
        "--db-password",
        REDACTED,
    ]
    env = redact_env(
        {
            "GH_PAT": "a",
            "STRIPE_SK": "b",
            "SENTRY_DSN": "c",
            "SLACK_WEBHOOK_URL": "d",
            "PWD": "/home",
            "CI": "true",
        }
    )
    assert env == {
        "GH_PAT": REDACTED,
        "STRIPE_SK": REDACTED,
        "SENTRY_DSN": REDACTED,
        "SLACK_WEBHOOK_URL": REDACTED,
        "PWD": "/home",
        "CI": "true",
    }


def test_a_non_loopback_listen_address_is_warned_about(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass\n")
    result = pytester.runpytest_subprocess(
        "--monitor", "-p", "no:xdist", "-W", "error", "--monitor-listen", "0.0.0.0:0"
    )
    assert result.ret == 0
    out = result.stdout.str()
    assert "0.0.0.0" in out
    assert "in clear" in out
    quiet = pytester.runpytest_subprocess(
        "--monitor", "-p", "no:xdist", "--monitor-listen", "127.0.0.1:0"
    )
    assert "in clear" not in quiet.stdout.str()


def test_secret_names_kept_from_os_environ_are_still_redacted() -> None:
    from testmon_live.plugin.redact import header_env

    env = header_env(
        {
            "CI": "true",
            "GITHUB_TOKEN": "ghs_x",
            "PYTHONHASHSEED": "0",
            "HOME": "/home/u",
            "DOCKER_HOST": "tcp://u:pw@h:2375",
            "TESTCONTAINERS_RYUK_DISABLED": "true",
            "PGPASSWORD": "pw",
            "REDIS_URL": "redis://:pw@h:6379",
            "EXTRA": "x",
        },
        keep=("EXTRA",),
    )
    assert env == {
        "CI": "true",
        "GITHUB_TOKEN": REDACTED,
        "PYTHONHASHSEED": "0",
        "DOCKER_HOST": "tcp://u:***@h:2375",
        "TESTCONTAINERS_RYUK_DISABLED": "true",
        "REDIS_URL": "redis://:***@h:6379",
        "EXTRA": "x",
    }
    assert os.environ  # the process environment itself is never touched


def test_redaction_never_breaks_the_json_of_a_line() -> None:
    from testmon_live.plugin.redact import redact_bytes

    events: list[ev.Event] = [
        ev.RunStarted(
            schema=1,
            run_id="r",
            rootdir="/r",
            env={"GITHUB_TOKEN": "ghs_x", "password": "pw1", "api_key": "k1"},
            args=["--token", "abc", "--password=x1"],
        ),
        ev.Notice(
            level="warning",
            source="gw0",
            msg="{'password': 'pw2', \"token\": \"t2\"} password=\"x2\" token='y2'",
        ),
    ]
    lines = ev.encode_lines(events)
    redacted = redact_bytes(lines)
    decoded = ev.decode_events(redacted)
    assert [type(e) for e in decoded] == [ev.RunStarted, ev.Notice]
    for secret in ("ghs_x", "pw1", "k1", "abc", "x1", "pw2", "t2", "x2", "y2"):
        assert secret.encode() in lines
        assert secret.encode() not in redacted, redacted


def test_a_monitor_dir_the_user_names_keeps_its_mode(tmp_path: Path) -> None:
    from testmon_live.plugin.runlog import MonitorDir

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o1777)  # as /tmp is
    MonitorDir(shared).ensure()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "runs").stat().st_mode) == 0o700
    old = tmp_path / "project" / ".testmon"
    old.mkdir(parents=True, mode=0o755)
    old.chmod(0o755)  # what an older version left
    MonitorDir(old).ensure()
    assert stat.S_IMODE(old.stat().st_mode) == 0o700


# Fragments that texts in a log are made of: the secrets above, near misses, digits (the
# shape cache leaves them out) and the punctuation the patterns look at.
_FRAGMENTS = [
    *SECRETS,
    "password=", "Password: ", "pwd=", "token=", "api_key=", "API-KEY: ", "secret ",
    "--token ", "--db-password ", "--gh-pat ", "-pat ", "_pat ", "Bearer ", "://", "u:",
    "@host", "hooks.slack.com/services/", "T0/B0/xyz", "gh", "p_", "sk_", "live_", "AK", "IA",
    "eyJ", "key", "monkeypatch", "tmp_path", "xox", "b-", "0", "7", "42", "1796558387.42",
    "--api-key", "--private_key", "', '", '","', "['", "']", "\x1c", "\x1f", "\t",
    "\x0b", "\x0c", "\x85", "\xa0", "\u2028", "\u3000",
    "-" * 40, "-_" * 8,
    " ", "=", ":", "'", '"', "\\", ",", "/", "-", "_", "\n", "abcdefghij", "ABCDEFGHIJ",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(_FRAGMENTS), max_size=12), min_size=1, max_size=6))
def test_redact_bytes_cuts_what_the_full_pattern_cuts(texts: list[list[str]]) -> None:
    """The pre-check and the cache of clean line shapes only ever save work: every line
    comes out as the full pattern alone makes it, whatever lines came before it."""
    from testmon_live.plugin.redact import _bytes_pattern, _keep_bytes, redact_bytes

    full = _bytes_pattern()
    for parts in texts:
        event = ev.Notice(level="warning", source="gw0", msg="".join(parts))
        line = ev.encode_line(event)
        assert redact_bytes(line) == full.sub(_keep_bytes, line), line
        # the same text with other digits: a clean shape learnt above must not hide it
        other = ev.encode_line(ev.Notice(level="warning", source="gw1", msg="".join(parts) + "9"))
        assert redact_bytes(other) == full.sub(_keep_bytes, other), other


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from([*_FRAGMENTS, "paſsword=", "TO\u212aEN=", "é", "\udc80"]), max_size=12)
)
def test_redact_text_cuts_what_the_full_pattern_cuts(parts: list[str]) -> None:
    """redact_text's pre-check only ever saves work, for text that is not ASCII too (the
    long s and the Kelvin sign match s and k under (?i))."""
    from testmon_live.plugin.redact import _keep_text, _text_pattern

    text = "".join(parts)
    assert redact_text(text) == _text_pattern().sub(_keep_text, text), text


def test_an_option_and_its_value_in_a_python_list_are_cut_in_the_log() -> None:
    """``['--api-key', 'VALUE']`` (a list's repr in a message): the pre-check once let it
    through as clean, while the full pattern cuts it."""
    from testmon_live.plugin.redact import redact_bytes

    for text in ("ran ['--api-key', 'sekrit123']", 'ran ["--access-key", "sekrit123"]'):
        line = ev.encode_line(ev.Notice(level="warning", source="gw0", msg=text))
        assert b"sekrit123" not in redact_bytes(line), line
        assert "sekrit123" not in redact_text(text)


def test_ascii_separators_do_not_hide_a_secret_from_redact_text() -> None:
    """``\\s`` of a str pattern matches the separators \\x1c-\\x1f, a bytes pattern's does not:
    the pre-check (bytes) must not call such a text clean."""
    for text in ("api_key\x1c=sekrit123", "\x1f--api-key\x1e sekrit123"):
        assert "sekrit123" not in redact_text(text), repr(text)


@pytest.mark.parametrize(
    "blank", ["\x1c", "\x1f", "\x0b", "\x0c", "\t", "\n", "\x85", "\xa0", "\u2028", "\u3000"]
)
def test_a_blank_the_encoder_escapes_does_not_hide_a_secret_in_the_log(blank: str) -> None:
    """What separates a keyword from its value is a blank to ``\\s`` in text; in the JSON
    line it is an escape (``\\u001c``, ``\\f``) or UTF-8 bytes (``\\xa0``), which a bytes
    ``\\s`` does not match: the log's pattern knows them, and so does the pre-check of a
    line's shape (digits left out: ``\\uc``)."""
    from testmon_live.plugin.redact import redact_bytes

    for text in (
        f"password{blank}=sekrit123",
        f"api_key{blank}: sekrit123",
        f"--token{blank}sekrit123",
        f"['--api-key',{blank}'sekrit123']",
        f"Authorization: Bearer{blank}sekrit123abc",
    ):
        assert "sekrit123" not in redact_text(text), repr(text)
        line = ev.encode_line(ev.Notice(level="warning", source="gw0", msg=text))
        assert b"sekrit123" not in redact_bytes(line), line


@pytest.mark.parametrize(
    "text",
    [
        "x\tghp_abcdefSEKRIT",  # a token right after an escaped control character
        "x\nAKIAIOSFODNN7SEKRIT1",
        "x\neyJabcdefgh.abcdefgh.abcSEKRIT",
        "x\x1cBearer abcSEKRIT",
        "x\rsk_live_abcSEKRIT1234",
        "password='a\tSEKRIT'",  # a quoted value holding an escaped blank
        "password= 'a\x1cSEKRIT'",
        "password\\t=SEKRIT",  # a text's own escapes, doubled by the encoder
        "password=\\tSEKRIT",
        "Bearer\\tabcSEKRIT",
        "--token\\tSEKRIT",
    ],
)
def test_what_redact_text_cuts_the_log_cuts(text: str) -> None:
    """Each of these was cut by redact_text and reached the log as it was: in the JSON line an
    escape's letter leaves no word boundary before a token, a quoted value holds an escape,
    a backslash is doubled (found by a review)."""
    from testmon_live.plugin.redact import redact_bytes

    assert "SEKRIT" not in redact_text(text), repr(text)
    line = ev.encode_line(ev.Notice(level="warning", source="gw0", msg=text))
    assert b"SEKRIT" not in redact_bytes(line), line


def test_redaction_of_hostile_runs_does_not_hang() -> None:
    """Runs of keywords (``keykeykey...``, ``-token-token...``, ``password_password_...``)
    once made the pre-check or the full pattern try every keyword against the rest of the
    run: quadratic, 10 s on 20,000 characters, hours on these 200,000. In a process of its
    own with a bound far above the seconds a linear search takes here."""
    script = """
from testmon_live.plugin import events as ev
from testmon_live.plugin.redact import redact_bytes, redact_text
for part in ("key", "api-key-", "-token", "password_", "token_", "credentials_",
             "--password", "--api-key\\\\t", "Bearer", "\\\\u001c"):
    text = part * (200_000 // len(part))
    redact_text(text)
    redact_bytes(ev.encode_line(ev.Notice(level="warning", source="gw0", msg=text)))
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_urls_without_credentials_leave_a_line_on_the_fast_path() -> None:
    """A URL's password is only ever cut before an ``@``: lines of a SQLite suite (a file's
    URL in every migration and wait) are no trigger, so the full pattern is never compiled
    (~8 ms at start-up) nor run on them; a URL with credentials still is, and is cut."""
    script = """
from testmon_live.plugin import events as ev
from testmon_live.plugin import redact
for url in ("sqlite:////tmp/app.db", "postgresql://db.internal:5432/app", "https://x.io/a?b=1"):
    line = ev.encode_line(ev.DbWait(dialect="sqlite", url=url, statement="SELECT 1", waited=1.0))
    assert redact.redact_bytes(line) == line
assert redact._bytes_pattern.cache_info().currsize == 0, "compiled for a URL with no '@'"
line = ev.encode_line(ev.Notice(msg="postgresql://app:Pw0rdless@db.internal/app"))
assert b"Pw0rdless" not in redact.redact_bytes(line)
assert b"postgresql://app:***@db.internal/app" in redact.redact_bytes(line)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_clean_shapes_are_bounded() -> None:
    from testmon_live.plugin.redact import _CleanShapes

    shapes = _CleanShapes(budget=1000)
    for n in range(200):
        shapes.add(b"shape-" + bytes([97 + n % 26]) * (n % 40))
    assert shapes._size <= 1000
    assert len(shapes._shapes) < 200
    shapes.add(b"x" * 500)  # larger than a sixteenth of the budget: not kept
    assert b"x" * 500 not in shapes
