"""The one exception type for problems a user can cause and fix."""


class KilnError(Exception):
    """Bad data, bad params or a missing input: the message says what and where.

    The CLI prints the message alone and exits non-zero; any other exception is a bug and
    keeps its traceback.
    """
