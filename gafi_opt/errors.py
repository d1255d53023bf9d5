"""The one exception type the CLI turns into a one-line message and exit status 2, and how to quote others."""


class GafiError(Exception):
    """Bad input from the user: a spec, a file, a URL, a flag. The message names the problem."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (library messages often span several), cut at `limit` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."
