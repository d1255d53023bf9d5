"""Storage URLs: which kind of storage a URL names, and the URL with its password hidden."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs, errors and exports."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def redact_text(text: str) -> str:
    """Any `scheme://user:password@` in free text (an error message) with the password hidden."""
    return re.sub(r"(\w[\w+.-]*://[^:/@\s]+):[^@\s]*@", r"\1:***@", text)


def scrub(text: str, url: str) -> str:
    """`text` with the URL's password (and the URL itself) replaced, for error messages."""
    if url:
        text = text.replace(url, redact(url))
    for secret in _secrets(url):
        text = text.replace(secret, "***")
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


def _secrets(url: str) -> list[str]:
    try:
        password = make_url(url).password
    except ArgumentError:
        match = re.search(r"//[^:/@]+:([^@]*)@", url)
        return [match.group(1)] if match and match.group(1) else []
    return [password] if password else []
