"""The one exception type the CLI turns into a one-line message and exit status 2."""


class GafiError(Exception):
    """Bad input from the user: a spec, a file, a URL, a flag. The message names the problem."""
