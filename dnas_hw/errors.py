"""The one error type a user can cause.

Anything raised as `UserError` reaches the terminal as a single line on stderr
with exit code 2 (see `dnas_hw.app.cli`); everything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """Bad input from the user: a missing file, a malformed row, a LUT miss, ..."""
