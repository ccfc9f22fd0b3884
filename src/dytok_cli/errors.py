"""Errors a user can act on: each carries a one-line message and is reported without a traceback."""


class DytokError(Exception):
    """Base of all user-facing errors; `str(error)` is one line."""

    exit_code = 2  # the CLI's exit status: most of these are a usage or input problem


class ModelError(DytokError):
    """A model could not be loaded or does not fit what dytok needs."""


class InputError(DytokError):
    """A video or an argument cannot be used."""


class Interrupted(DytokError):
    """The user stopped a run (Ctrl-C); the message summarises how far it got."""

    exit_code = 130
