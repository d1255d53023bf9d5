"""Storage URLs: which kind of storage a URL names, and the URL with its password hidden."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


# scheme://user:password@host: the password runs to the last '@' before the host (the host holds no
# '@' or '/'), so a password with an unescaped '@' is hidden whole, not cut at its first '@'.
_CREDENTIALS = re.compile(r"(\b[A-Za-z][\w+.-]*://[^:/@\s]*):(\S*?)@(?=[^@/\s]*(?:[/?#\s]|$))")


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs, errors and exports."""
    return _CREDENTIALS.sub(r"\1:***@", url, count=1)


def redact_text(text: str) -> str:
    """Any `scheme://user:password@` in free text (an error message) with the password hidden."""
    return _CREDENTIALS.sub(r"\1:***@", text)


def scrub(text: str, url: str) -> str:
    """`text` with the URL's password (and the URL itself) replaced, for error messages."""
    if url:
        text = text.replace(url, redact(url))
    for secret, hidden in _secrets(url):
        text = text.replace(secret, hidden)
    return redact_text(text)


def local_file(url: str) -> Path | None:
    """The file behind a SQLite or journal URL; None for a database server, a proxy or a URL that does not parse."""
    if is_journal(url):
        return Path(url.removeprefix("journal://"))
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def is_journal(url: str) -> bool:
    return url.startswith("journal://") or url.endswith((".log", ".jsonl"))


def password_has_at(url: str) -> bool:
    """Whether the URL's password holds an unescaped '@' (drivers cut it there and take the rest for the host)."""
    match = _CREDENTIALS.search(url)
    return bool(match) and "@" in match.group(2)


def _secrets(url: str) -> list[tuple[str, str]]:
    """(text, its replacement): the URL's password as written and percent-decoded (a driver may quote
    either), and each tail after an unescaped '@' in it followed by '@' (a driver that cut the
    password at its first '@' shows `tail@host` as the host)."""
    match = _CREDENTIALS.search(url)
    if not match or not match.group(2):
        return []
    password = match.group(2)
    parts = password.split("@")
    tails = {"@".join(parts[i:]) + "@" for i in range(1, len(parts))}
    secrets = [(secret, "***") for secret in {password, unquote(password)}]
    secrets += [(tail, "***@") for tail in tails if tail != "@"]
    return sorted(secrets, key=lambda pair: len(pair[0]), reverse=True)
