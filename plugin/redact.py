"""Keep secrets out of logs: passwords in URLs, ``key=value`` secrets, options that take a
secret as their next argument, well-known token shapes, values of secret-looking variables.

:func:`redact_bytes` runs once on every line the hub appends to a run log (the one place
where every text enters it, whatever event carries it): on the encoded JSON, so a match
never crosses a string's quotes or escapes and the line stays valid JSON. What is cut is
replaced by :data:`REDACTED`; a token's well-known prefix (``ghp_``, ``AKIA``) is kept so
that a reader still sees what kind of credential was there.

:func:`header_env` chooses what of the environment a run header keeps: what explains a
run (CI and pytest variables, ``PYTHON*``, ``DOCKER_HOST``, ``TESTCONTAINERS_*``, database
URLs) and what the user lists in ``monitor_env_keep``, redacted. Never the whole environment.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

REDACTED = "***"


# The patterns a run header needs (:func:`header_env`, :func:`redact_args`) are compiled on
# first use, like the two full ones below: the controller needs them once, at start-up, and a
# worker imports this module only to show a database URL.
@functools.cache
def _secret_name() -> re.Pattern[str]:
    return re.compile(
        r"(PASSW|PASSPHRASE|_PASS$|^PASS|PWD$|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|"
        r"ACCESS_?KEY|AUTH(?!OR)|COOKIE|SESSION_?KEY|SIGNATURE|_KEY$|^KEY$|_PAT$|^PAT$|_SK$|"
        r"DSN$|WEBHOOK)",
        re.IGNORECASE,
    )


_NOT_SECRET = frozenset({"PWD", "OLDPWD"})

# One alternation, each branch a named group that is kept (what precedes the secret); the
# secret itself is what follows the group within the match. Written for the encoded JSON of
# a log line as much as for plain text: a value never includes a quote or a backslash, so
# redaction cannot break a JSON string, and JSON's \" counts as a quote.
_KEYWORD = (
    r"(?i:passw(?:or)?d|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)"
)
_OPTION_NAME = r"(?:[A-Za-z0-9_-]*?" + _KEYWORD + r"|(?:[A-Za-z0-9_-]*[_-])?(?i:pat))"
"""The name of an option whose next argument is a secret: --token, --db-password, --gh-pat."""
_SECRET_OPTION = (
    r"(?=[A-Za-z0-9_-]*?(?:"
    + _KEYWORD
    + r"|(?<![A-Za-z0-9])(?i:pat))(?![A-Za-z0-9]))[A-Za-z0-9_-]+"
)
"""The same name within a longer text, matched in linear time: a run of name characters
with a keyword in it that ends the run or is followed by ``_`` or ``-`` (``pat`` also only
at its start or after one). Written as :data:`_OPTION_NAME` plus a suffix, the name let the
engine try every split of a run such as ``-token-token-...`` (3 s on 20,000 characters)."""
_QUOTE = r"(?:'|\\\"|\")?"
_UNICODE_BLANKS_UTF8 = (
    r"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80"
)
"""What a str pattern's ``\\s`` matches beyond ASCII (NEL, no-break and the other Unicode
spaces), as the UTF-8 bytes a JSON line carries them in (the encoder leaves them as they are)."""
_BLANK_TEXT = r"(?:\s|\\[tnrf])"
"""A blank in text: ``\\s`` (the ASCII separators \\x1c-\\x1f and Unicode spaces included), or
an escaped one (a text that holds JSON or a repr)."""
_BLANK_JSON = r"(?:\s|\\\\?[tnrf]|\\u00(?:0[bB]|1[c-fC-F])|" + _UNICODE_BLANKS_UTF8 + ")"
"""The same as a JSON line holds it: ``\\t`` ``\\n`` ``\\r`` ``\\f``, ``\\u000b`` and
``\\u001c``-``\\u001f`` escaped, Unicode spaces as UTF-8 bytes (a bytes ``\\s`` is only
ASCII's six); and a text's own ``\\t``, whose backslash the encoder doubles."""
_BLANK_SHAPE = r"(?:\s|\\\\?[tnrf]|\\u[bcdef]|" + _UNICODE_BLANKS_UTF8 + ")"
"""The same in a line's shape (lower case, digits left out: ``\\u001c`` is ``\\uc`` there)."""


_START_TEXT = r"\b"
_START_JSON = r"(?:\b|(?<=\\[tnrfb])|(?<=\\u00[0-9a-fA-F]{2}))"
"""Where a token may start: at a word boundary; in a JSON line also right after an escaped
control character (``\\ntoken``: the escape's letter leaves no boundary)."""
_QUOTED_TEXT = r"'[^'\n\\\"]*'"
_QUOTED_JSON = r"'(?:[^'\\\"]|\\[^\"])*'"
"""A value in single quotes; in a JSON line it may hold escapes (``'a\\tb'``), never an
escaped double quote (the end of the JSON string, as ``"`` ends the text's)."""


def _next_arg(blank: str) -> str:
    """Between an option and its value: blanks, or the end of one string of a list and the
    start of the next (``","`` in JSON, ``", "`` and ``', '`` in a list's text, ``\\", \\"``
    once that text is in JSON)."""
    return rf"""(?:{blank}+|\\?",{blank}*\\?"|',{blank}*')"""


_VALUE = r"[^\s&;,'\"\\)\]}]+"


def _pattern(blank: str, start: str, quoted: str) -> str:
    """The full pattern, with ``blank`` for what separates a keyword from its value, ``start``
    for where a token may begin and ``quoted`` for a value in single quotes."""
    return "|".join(
        (
            # scheme://user:password@host (user may be empty: redis://:pw@host)
            r"(?P<url>://[^\s:/@\"'\\]*:)[^\s@/\"'\\]+(?=@)",
            # a Sentry DSN's key is its user name
            r"(?P<dsn>://)[0-9a-f]{32}(?=@)",
            r"(?P<hook>hooks\.slack\.com/services/)[A-Za-z0-9/_-]+",
            # Authorization: Bearer <token>
            r"(?P<bearer>" + start + r"Bearer" + blank + r"+)[A-Za-z0-9._~+/=-]{8,}",
            # --token VALUE, -password VALUE: the option's next argument (in text or a JSON
            # list) (the look-behind lets a match start only where a run of dashes starts:
            # tried at each dash of a long run, the lazy name made the search quadratic, 22 s
            # on 15,000 dashes)
            r"(?P<opt>(?<![A-Za-z0-9_-])--?"
            + _SECRET_OPTION
            + _next_arg(blank)
            + r")(?!-)"
            + _VALUE,
            # password=VALUE, GH_TOKEN=VALUE, token: VALUE, 'secret': 'VALUE', api_key='VALUE'
            # (the match starts at the keyword: whatever precedes it stays as it is)
            r"(?P<kv>"
            + _KEYWORD
            # the rest of the name, 100 characters at most: tried from every keyword of a run
            # like "password_password_...", an unbounded rest made the search quadratic
            # (2.6 s on 80,000 characters)
            + r"(?:[_-][A-Za-z0-9_]{0,100})?(?![A-Za-z0-9])"
            + _QUOTE
            + blank
            + r"*[=:]"
            + blank
            + r"*(?:\\\"|\")?)(?:"
            + quoted
            + "|"
            + _VALUE
            + r")",
            # well-known token shapes: the prefix stays, the rest goes
            r"(?P<shape>"
            + start
            + r"(?:gh[pousr]_|github_pat_|xox[abposr]-|(?:sk|rk)_(?:live|test)_))"
            r"[A-Za-z0-9_-]{10,}",
            r"(?P<aws>" + start + r"(?:AKIA|ASIA))[0-9A-Z]{16}\b",
            r"(?P<jwt>)" + start + r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        )
    )


_REDACTED_BYTES = REDACTED.encode()


# Compiled on first use: the two compilations cost ~28 M instructions (~8 ms), which every
# run's controller would pay at start-up while most runs never meet a trigger (below).
@functools.cache
def _text_pattern() -> re.Pattern[str]:
    return re.compile(_pattern(_BLANK_TEXT, _START_TEXT, _QUOTED_TEXT))


@functools.cache
def _bytes_pattern() -> re.Pattern[bytes]:
    return re.compile(_pattern(_BLANK_JSON, _START_JSON, _QUOTED_JSON).encode())


def _keep_text(match: re.Match[str]) -> str:
    group = match.lastgroup
    return (match.group(group) if group else "") + REDACTED


def _keep_bytes(match: re.Match[bytes]) -> bytes:
    group = match.lastgroup
    return (match.group(group) if group else b"") + _REDACTED_BYTES


def is_secret_name(name: str) -> bool:
    """Does an environment variable's name suggest its value is a secret?"""
    return name.upper() not in _NOT_SECRET and bool(_secret_name().search(name))


def redact_text(text: str) -> str:
    """``text`` with every secret the patterns know replaced by :data:`REDACTED` (the full
    pattern only for a text that holds a trigger, as in :func:`redact_bytes`; any text that
    is not ASCII goes through it: ``(?i)`` matches ``ſ`` as ``s``, which no lowering
    shows)."""
    if text.isascii() and not _triggered(text.lower().translate(_STR_BLANKS).encode()):
        return text
    return _text_pattern().sub(_keep_text, text)


def redact_bytes(data: bytes) -> bytes:
    """The same on encoded JSON lines; ``data`` itself (no copy) when there is nothing to cut.

    Cheap where there is nothing to find. Each line is first reduced to its *shape*: lower
    case, digits left out (one ``bytes.translate``, a table look-up a byte). No trigger
    contains a digit, so deleting digits never removes one (it may only join letters into
    one): a line whose shape has no trigger has no secret the patterns could find. Lines
    of a run repeat their shape (the same event kinds, fixture names and test names, other
    timestamps and test numbers), so a shape found clean once is remembered
    (:class:`_CleanShapes`) and its next lines cost a hash look-up; only a line whose shape
    holds a trigger goes through the full pattern, every time."""
    lines = data.split(b"\n")
    clean = _CLEAN
    changed = False
    for number, line in enumerate(lines):
        if not line:
            continue
        shape = line.translate(_LOWER, _DIGITS)
        if shape in clean:
            continue
        if _triggered(shape):
            cut = _bytes_pattern().sub(_keep_bytes, line)
            if cut != line:
                lines[number] = cut
                changed = True
        else:
            clean.add(shape)
    return b"\n".join(lines) if changed else data


_STR_BLANKS = str.maketrans("\x1c\x1d\x1e\x1f", "    ")
"""What ``\\s`` matches in a str pattern and not in a bytes one (the ASCII separators): made
blanks before a text's pre-check, which is the bytes one."""
_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_DIGITS = b"0123456789"


class _CleanShapes:
    """Shapes of lines found without a trigger, up to :attr:`budget` bytes of them (then
    forgotten and learnt again: a run of ever new texts cannot grow the controller)."""

    __slots__ = ("_shapes", "_size", "budget")

    def __init__(self, budget: int = 1 << 20) -> None:
        self._shapes: set[bytes] = set()
        self._size = 0
        self.budget = budget

    def __contains__(self, shape: bytes) -> bool:
        return shape in self._shapes

    def add(self, shape: bytes) -> None:
        if len(shape) > self.budget // 16:
            return  # a huge line (a long failure text): not worth keeping
        self._size += len(shape)
        if self._size > self.budget:
            self._shapes.clear()
            self._size = len(shape)
        self._shapes.add(shape)


_CLEAN = _CleanShapes()


_TRIGGERS = (
    b"bearer", b"xox", b"akia", b"asia", b"eyj", b"passw", b"pwd", b"secret",
    b"token", b"credential", b"hooks.slack",
)  # fmt: skip
"""Lower-case substrings one of which every secret the patterns find contains (but a URL's
password: :func:`_triggered`)."""
_TRIGGER_PATTERNS = (
    re.compile(rb"gh(?:[pousr]_|ithub_pat_)"),
    re.compile(rb"k_(?:live|test)_"),
    re.compile(rb"_pat(?![a-z0-9])"),
    re.compile(rb"-pat(?![a-z0-9])"),
)
"""The same for triggers too common as substrings (``_pat`` in ``tmp_path``): each starts
with a literal, which the regular expression engine finds as fast as ``in``."""
_NAME_RUN = re.compile(rb"[a-z0-9_-]*")
_RUN_TRIGGERS = (
    # api_key=VALUE, "access-key": "VALUE" (the kv branch)
    (
        re.compile(rb"key"),
        re.compile(rb"[a-z0-9_-]*['\"\\]{0,2}" + _BLANK_SHAPE.encode() + rb"*[=:]"),
    ),
    # --api-key VALUE, ["--api-key","VALUE"], ['--api-key', 'VALUE'] (the opt branch)
    # (anchored on the keyword, not on the dash: from each dash of a long run of them the
    # search would scan to the run's end, a quadratic cost on every new line's shape)
    (
        re.compile(rb"(?:api|access|private)[_-]?key"),
        re.compile(rb"[a-z0-9_-]*" + _next_arg(_BLANK_SHAPE).encode()),
    ),
)
"""``key`` (in ``monkeypatch`` too) only as the full pattern can match it: before ``=`` or
``:`` (the kv branch), or after a dash and before an option's value (the opt branch), so
that a fixture list with ``"monkeypatch","`` in it is not a trigger. Each is a keyword and
what must follow it after the rest of its run of name characters (:func:`_run_triggered`)."""


def _triggered(low: bytes) -> bool:
    for trigger in _TRIGGERS:
        if trigger in low:
            return True
    # A URL's password (or DSN key) is only ever cut before an "@": a line with URLs and no
    # "@" (a SQLite file's, a server's without credentials) has none, and stays clean.
    if b"://" in low and b"@" in low:
        return True
    for pattern in _TRIGGER_PATTERNS:
        if pattern.search(low) is not None:
            return True
    return any(_run_triggered(low, keyword, tail) for keyword, tail in _RUN_TRIGGERS)


def _run_triggered(low: bytes, keyword: re.Pattern[bytes], tail: re.Pattern[bytes]) -> bool:
    """``keyword`` somewhere in ``low``, followed by ``tail`` (which starts with the rest of
    the keyword's run of name characters). Tried from the first keyword of each run only:
    every later one in the same run reaches the same end of it and fails alike, and trying
    each (a regular expression search does) costs quadratic time on ``keykeykey...``."""
    at = 0
    while True:
        found = keyword.search(low, at)
        if found is None:
            return False
        end = found.end()
        if tail.match(low, end) is not None:
            return True
        at = _NAME_RUN.match(low, end).end()  # type: ignore[union-attr]


def redact_url(url: str) -> str:
    """A database or service URL with its password replaced."""
    return redact_text(url)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment with secret-looking values hidden and the rest redacted."""
    out: dict[str, str] = {}
    for name, value in env.items():
        if is_secret_name(name) and value:
            out[name] = REDACTED
        else:
            out[name] = redact_text(value)
    return out


@functools.cache
def _explains_a_run() -> re.Pattern[str]:
    return re.compile(
        r"^(?:CI|CI_.*|BUILD_.*|RUNNER_.*|GITHUB_.*|GITLAB_.*|BUILDKITE.*|CIRCLE.*|JENKINS_.*|"
        r"TRAVIS.*|TF_BUILD|TEAMCITY_.*|PYTEST_.*|PYTHON.*|TESTMON_.*|TOX_.*|NOX_.*|VIRTUAL_ENV|"
        r"DOCKER_HOST|TESTCONTAINERS_.*|TC_HOST|TZ|LANG|LC_.*|"
        r".*(?:DATABASE|_DB|POSTGRES|MYSQL|MARIADB|REDIS|MONGO)[A-Z_]*_(?:URL|URI))$"
    )


def header_env(env: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
    """What of ``env`` a run header records: the variables that explain a run, and those
    named in ``keep``; secret-looking ones hidden, the rest redacted."""
    wanted = set(keep)
    chosen = {
        name: value
        for name, value in env.items()
        if name in wanted or _explains_a_run().match(name.upper())
    }
    return redact_env(chosen)


def redact_args(args: list[str]) -> list[str]:
    """Command-line arguments redacted; the argument after ``--token`` and the like too."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next and not arg.startswith("-"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = bool(_option_with_secret().match(arg))
        out.append(redact_text(arg))
    return out


@functools.cache
def _option_with_secret() -> re.Pattern[str]:
    return re.compile(r"^--?" + _OPTION_NAME + r"(?:[_-][A-Za-z0-9_-]*)?$")
