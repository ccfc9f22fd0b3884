"""Errors a user can act on: each carries a one-line message and is reported without a traceback."""


class DytokError(Exception):
    """Base of all user-facing errors; `str(error)` is one line."""


class ModelError(DytokError):
    """A model could not be loaded or does not fit what dytok needs."""


class InputError(DytokError):
    """A video or an argument cannot be used."""
