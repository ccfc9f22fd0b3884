"""`dytok chat`: a conversation about one video at a time, over one `Pipeline`.

The video is decoded and encoded once; each question goes through the model's own multi-turn template with
the earlier turns (`Question.history`), and the prompt up to the video's last token is reused from the
first question on. On a terminal it is a prompt with streamed answers, `/commands`, `\"\"\"` for multi-line
input, Ctrl-C to stop an answer; from a pipe, one question per line and one answer per question.

A model that reasons before it answers (`--think`, or one that always does) has its reasoning kept apart:
what is printed as the answer, and what the conversation holds for the next question, is the answer alone;
the reasoning goes only to a caller that asks for it (`on_reasoning`: `--show-reasoning`, on stderr).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import DytokError
from ..pipeline import Pipeline, StageCallback
from ..record import answer_record
from ..types import Answer, Question, Visual

PROMPT, CONTINUATION = ">>> ", "... "
FENCE = '"""'

HELP = f"""Ask a question about the video and press Enter; earlier questions and answers stay in the conversation.
  /video PATH   talk about another video (starts a new conversation)
  /clear        forget the conversation (the video stays loaded)
  /help         show this
  /quit         leave (or Ctrl-D)
  {FENCE}          begin and end a question of several lines
Ctrl-C stops an answer; at the prompt it leaves."""


class Command(str, Enum):
    ask = "ask"
    video = "video"
    clear = "clear"
    help = "help"
    quit = "quit"


_COMMANDS = {"/video": Command.video, "/clear": Command.clear, "/help": Command.help, "/?": Command.help,
             "/quit": Command.quit, "/exit": Command.quit, "/bye": Command.quit}


@dataclass(frozen=True)
class Entry:
    """One thing typed: a question (`ask`) or a command with its argument."""

    command: Command
    text: str = ""


class UsageError(DytokError):
    """Something typed that is not a command or lacks its argument; the conversation goes on."""


def read_entries(read_line: Callable[[str], str]) -> Iterator[Entry]:
    """What is typed, entry by entry, until `read_line` raises EOFError (Ctrl-D, end of input).

    `read_line(prompt)` returns one line without its newline. A line that begins with \"\"\" opens a question
    of several lines, closed by a line that ends with \"\"\"; blank lines are skipped.
    """
    while True:
        line = read_line(PROMPT)
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(FENCE):
            yield Entry(Command.ask, _fenced(stripped[len(FENCE):], read_line))
            continue
        if stripped.startswith("/"):
            name, _, argument = stripped.partition(" ")
            command = _COMMANDS.get(name.lower())
            if command is None:
                raise UsageError(f"unknown command {name}; /help lists them (begin with {FENCE} to ask a question starting with /)")
            yield Entry(command, argument.strip())
            continue
        yield Entry(Command.ask, stripped)


def _fenced(first: str, read_line: Callable[[str], str]) -> str:
    lines = [first]
    while not lines[-1].rstrip().endswith(FENCE) or (len(lines) == 1 and not first.strip()):
        lines.append(read_line(CONTINUATION))
    lines[-1] = lines[-1].rstrip()[: -len(FENCE)]
    return "\n".join(lines).strip()


class Conversation:
    """The video talked about, its conversation so far, and the pipeline that answers."""

    def __init__(self, pipeline: Pipeline, video: str | Path, on_stage: StageCallback | None = None) -> None:
        self.pipeline = pipeline
        self.history: list[tuple[str, str]] = []
        self.video = str(video)
        self.visual: Visual = pipeline.prepare(video, on_stage)

    def load(self, video: str | Path, on_stage: StageCallback | None = None) -> None:
        """Talk about `video` from now on; one that cannot be read leaves the current one in place."""
        visual = self.pipeline.prepare(video, on_stage)
        self.pipeline.release()  # the last video's kept prefix
        self.video, self.visual, self.history = str(video), visual, []

    def clear(self) -> None:
        self.history = []

    def ask(self, text: str, on_text: Callable[[str], None] | None = None, stop: threading.Event | None = None,
            on_stage: StageCallback | None = None, on_reasoning: Callable[[str], None] | None = None) -> Answer:
        """Answer `text` after the conversation so far; an answer stopped early is not kept in it. The
        conversation keeps the answer alone (as the published chat templates drop earlier turns' reasoning)."""
        question = Question(text, history=tuple(self.history))
        answer = self.pipeline.ask(self.visual, question, on_text, on_stage, stop=stop, on_reasoning=on_reasoning)
        if not answer.stopped:
            self.history.append((text, answer.text))
        return answer

    def record(self, answer: Answer) -> dict[str, Any]:
        """The JSON record of `answer`, as `dytok ask` writes it, with its turn in the conversation."""
        record = answer_record(answer, self.pipeline.settings, self.pipeline.prior_name)
        record["turn"] = len(answer.plan.question.history) + 1
        return record


@dataclass
class Terminal:
    """What the chat needs of the terminal (the CLI renders; this module only talks through these)."""

    read_line: Callable[[str], str]  # input(prompt): EOFError on Ctrl-D, KeyboardInterrupt on Ctrl-C
    write: Callable[[str], None]  # the answer's text, on stdout
    note: Callable[[str], None]  # messages, on stderr
    error: Callable[[str], None]
    working: Callable[[str], Any]  # a context manager showing progress, yielding a stage callback or None
    reasoning: Callable[[str], None] | None = None  # the model's reasoning as it comes (stderr); None: not shown


def _stage(spinner: Any) -> StageCallback | None:
    return spinner.update if spinner is not None else None


def converse(conversation: Conversation, terminal: Terminal) -> None:
    """The interactive loop, until /quit or Ctrl-D; Ctrl-C at the prompt raises KeyboardInterrupt."""
    terminal.note(f"{conversation.video}: ask a question; /help for commands, Ctrl-D to leave")
    entries = read_entries(terminal.read_line)
    while True:
        try:
            entry = next(entries)
        except StopIteration:
            return
        except EOFError:
            terminal.write("\n")
            return
        except UsageError as problem:
            terminal.error(str(problem))
            entries = read_entries(terminal.read_line)
            continue
        if entry.command is Command.quit:
            return
        try:
            _carry_out(entry, conversation, terminal)
        except DytokError as problem:
            terminal.error(str(problem))


def _carry_out(entry: Entry, conversation: Conversation, terminal: Terminal) -> None:
    if entry.command is Command.help:
        terminal.note(HELP)
    elif entry.command is Command.clear:
        conversation.clear()
        terminal.note("conversation cleared")
    elif entry.command is Command.video:
        if not entry.text:
            raise UsageError("/video needs a path: /video PATH")
        with terminal.working("Loading the video") as spinner:
            conversation.load(entry.text, _stage(spinner))
        terminal.note(f"{conversation.video}: a new conversation")
    else:
        _answer(entry.text, conversation, terminal)


def _answer(text: str, conversation: Conversation, terminal: Terminal) -> None:
    """Stream the answer; the first Ctrl-C stops it after the current token, a second one at once."""
    stop = threading.Event()

    def on_interrupt(number: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with ExitStack() as progress:
            spinner = progress.enter_context(terminal.working("Thinking"))

            def on_text(piece: str) -> None:
                progress.close()  # the first piece ends the progress display; later ones find it closed
                terminal.write(piece)

            on_reasoning = None
            if terminal.reasoning is not None:
                show = terminal.reasoning

                def on_reasoning(piece: str) -> None:
                    progress.close()
                    show(piece)

            answer = conversation.ask(text, on_text, stop, _stage(spinner), on_reasoning)
    except KeyboardInterrupt:
        terminal.write("\n")
        terminal.note("stopped")
        return
    finally:
        signal.signal(signal.SIGINT, previous)
    terminal.write("\n")
    if answer.stopped:
        terminal.note("stopped; this answer is left out of the conversation")


def answer_lines(conversation: Conversation, lines: Iterator[str], emit: Callable[[Answer], None],
                 error: Callable[[str], None], on_reasoning: Callable[[str], None] | None = None) -> int:
    """Questions (and /commands) from `lines`, answers to `emit` in order, any reasoning to `on_reasoning`
    as it comes; returns how many failed."""
    source = iter(lines)

    def read_line(prompt: str) -> str:
        try:
            return next(source).rstrip("\r\n")
        except StopIteration:
            raise EOFError from None

    failed = 0
    entries = read_entries(read_line)
    while True:
        try:
            entry = next(entries)
        except (StopIteration, EOFError):
            return failed
        except UsageError as problem:
            error(str(problem))
            failed += 1
            entries = read_entries(read_line)
            continue
        try:
            if entry.command is Command.quit:
                return failed
            if entry.command is Command.ask:
                emit(conversation.ask(entry.text, on_reasoning=on_reasoning))
            elif entry.command is Command.video:
                if not entry.text:
                    raise UsageError("/video needs a path: /video PATH")
                conversation.load(entry.text)
            elif entry.command is Command.clear:
                conversation.clear()
        except DytokError as problem:
            error(str(problem))
            failed += 1
