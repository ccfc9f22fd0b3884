"""The `dytok` command's entry point (also `python -m dytok_cli`): Ctrl-C ends the command wherever it lands.

A Ctrl-C raises KeyboardInterrupt in whatever Python code runs at that moment. torch's C extension imports
numpy and, when that import fails, clears the error and goes on: a Ctrl-C that landed in numpy's import was
lost (the command went on answering) or left half-imported modules behind (transformers then failed with
"Could not import module 'PreTrainedModel'"). So a Ctrl-C that lands while numpy imports is held and
delivered as soon as that import is over (a fraction of a second); anywhere else it interrupts at once.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from .errors import Interrupted

_HELD_WHILE_IMPORTING = frozenset({"numpy"})  # top-level packages whose import a Ctrl-C must not break
_RECHECK_S = 0.05  # how often a held Ctrl-C looks again whether the import is over


def importing_a_held_package(frame: FrameType | None) -> bool:
    """Whether `frame` or one that called it runs the top-level code of a module of those packages."""
    while frame is not None:
        package = frame.f_globals.get("__name__", "").partition(".")[0]
        if frame.f_code.co_name == "<module>" and package in _HELD_WHILE_IMPORTING:
            return True
        frame = frame.f_back
    return False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT, and of the alarm that brings back a Ctrl-C while it is held."""
    if importing_a_held_package(frame):
        signal.signal(signal.SIGALRM, _interrupt)
        signal.setitimer(signal.ITIMER_REAL, _RECHECK_S)
        return
    if signum == signal.SIGALRM:  # the held Ctrl-C is delivered: the alarm is nobody's now
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    raise KeyboardInterrupt


def hold_interrupts_while_importing() -> None:
    if hasattr(signal, "setitimer"):  # not on Windows: no interval timer there to bring a held Ctrl-C back
        signal.signal(signal.SIGINT, _interrupt)


def main() -> int:
    hold_interrupts_while_importing()
    try:
        from .cli import main as run_command

        return run_command()
    except KeyboardInterrupt:  # before the command's own handling began
        from .render import error

        error("interrupted")
        return Interrupted.exit_code


if __name__ == "__main__":
    sys.exit(main())
