"""Keep secrets out of logs: passwords in URLs, values of secret-looking variables."""

from __future__ import annotations

import re
from collections.abc import Mapping

REDACTED = "***"

_SECRET_NAME = re.compile(
    r"(PASSW|PASSPHRASE|_PASS$|^PASS|PWD$|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|"
    r"AUTH(?!OR)|COOKIE|SESSION_?KEY|SIGNATURE|_KEY$|^KEY$)",
    re.IGNORECASE,
)
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})
# scheme://user:password@host -> scheme://user:***@host (also inside longer strings).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?=@)")
# key=value style secrets inside DSNs and command lines: password=..., pwd=..., token=...
_KV_SECRET = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|secret|token|api_key|apikey)\s*[=:]\s*)(?P<val>[^\s&;,'\"]+)",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Does an environment variable's name suggest its value is a secret?"""
    return name.upper() not in _NOT_SECRET and bool(_SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    """Redact URL passwords and ``password=...`` pairs anywhere in ``text``."""
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)
    if "=" in text or ":" in text:
        text = _KV_SECRET.sub(lambda m: m.group("head") + REDACTED, text)
    return text


def redact_url(url: str) -> str:
    """A database or service URL with its password replaced."""
    return redact_text(url)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment with secret-looking values hidden and URL passwords redacted."""
    out: dict[str, str] = {}
    for name, value in env.items():
        if is_secret_name(name) and value:
            out[name] = REDACTED
        else:
            out[name] = redact_text(value)
    return out


def redact_args(args: list[str]) -> list[str]:
    return [redact_text(a) for a in args]
