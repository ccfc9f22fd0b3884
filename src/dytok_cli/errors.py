"""Errors a user can act on: each carries a one-line message and is reported without a traceback.

The command's exit status is the error's `exit_code`: 2 for a usage or input problem, 3 for a model that
cannot be had now (offline, the hub failing), 130 for Ctrl-C; 1 is a batch with failed inputs, or a bug.
"""

from pathlib import Path


class DytokError(Exception):
    """Base of all user-facing errors; `str(error)` is one line."""

    exit_code = 2  # the CLI's exit status: most of these are a usage or input problem


class ModelError(DytokError):
    """A model could not be loaded or does not fit what dytok needs."""


class ModelUnavailable(ModelError):
    """A model that could load, but not now: not in the local cache, and no download (no network,
    HF_HUB_OFFLINE, the hub failing or a download broken off). Its own status, so that a script tells
    "try again later" from a bad command; a name the hub says does not exist is a ModelError."""

    exit_code = 3


class InputError(DytokError):
    """A video or an argument cannot be used."""


class Interrupted(DytokError):
    """The user stopped a run (Ctrl-C); the message summarises how far it got."""

    exit_code = 130


def install_hint(extra: str) -> str:
    """The command that adds the optional extra `extra` (pyproject.toml) to an installed dytok: pip finds
    dytok-cli installed, however it was (from a checkout too), and adds only what the extra brings."""
    return f"python -m pip install 'dytok-cli[{extra}]'"


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def about(video: str, error: BaseException) -> str:
    """`error` in one line that names `video` once: a VideoError names it already, others do not."""
    text = one_line(error)
    for name in (video, str(Path(video))):
        if text.startswith(f"{name}: "):
            text = text[len(name) + 2 :]
            break
    return f"{video}: {text}"
