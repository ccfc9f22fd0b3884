"""`dytok eval`: accuracy and speed per method and ratio on a multiple-choice video QA set, in one process.

Models load once. Each item's video is decoded and encoded once and serves every (method, ratio) pair:
`none` once (ratio 1), every other method at each ratio. Each pair is appended to `predictions.jsonl` as it
completes, so running the same command again resumes where a crash or Ctrl-C stopped; `summary.json` and
`pareto.png` are rebuilt from the predictions at the end.

Timings: a pair's timings are what asking that one question about the video alone costs, as `dytok ask`
reports it. The item's decoding and vision pass ran once, but they are counted in full in every pair (an
assistant prior model's vision pass only in `dytok`'s pairs), so the methods' mean times, and their
speed-ups against `none`, compare like with like.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import statistics
import string
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from ..batch import PER_VIDEO_ERRORS
from ..config import BASELINE, Method, Settings
from ..errors import InputError, one_line
from ..files import write_atomically
from ..media.cache import VisualCache, file_digest
from ..models import VideoModel
from ..pipeline import Answer, Pipeline
from ..record import TIMING_KEYS

FORMAT = 1  # of manifest.json and summary.json
MANIFEST, PREDICTIONS, SUMMARY, PARETO = "manifest.json", "predictions.jsonl", "summary.json", "pareto.png"
OUTPUTS = (MANIFEST, PREDICTIONS, SUMMARY, PARETO)
PARETO_SIZE = (1200, 500)  # pixels (width, height): two panels side by side
_PARETO_DPI = 100

LETTERS = string.ascii_uppercase
# lmms-eval's VideoMME prompt word for word (its preamble names subtitles even where none are given), with
# the letters of the item's own options, so scores compare with published lmms-eval ones. With --subtitles or
# --speech the pipeline puts the lines over the sampled frames before it, under lmms-eval's header, as its
# videomme_w_subtitle task does.
PREAMBLE = (
    "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
    "Respond with only the letter ({letters}) of the correct option."
)
POST_PROMPT = "Answer with the option's letter from the given choices directly."
# How VideoMME's released videos are named: `{videoID}` plus one of these, tried in order.
VIDEO_ID_SUFFIXES = (".mp4", ".MP4", ".mkv")
# Settings that change what a pair answers: a run resumes only under the same ones.
IDENTITY = (
    "model", "prior_model", "frames", "fps", "max_frames", "backend", "prior_layers", "prune_layer", "device",
    "dtype", "max_new_tokens", "think", "max_reasoning_tokens",
)
SPEECH_IDENTITY = ("subtitles", "speech", "speech_model")  # what is said in the video goes into the prompt


# --- items -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    id: str
    video: str  # a path, resolved
    question: str
    options: tuple[str, ...]  # option texts, without their letters
    answer: str  # the correct option's letter
    category: str | None = None
    duration: str | float | None = None  # a label ("short") or seconds

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]


class ItemsError(InputError):
    """Items that cannot be used: `problems` holds one line per bad item, naming the file and line."""

    def __init__(self, problems: list[str]) -> None:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)
        self.problems = problems


def load_items(path: Path, video_dir: Path | None = None) -> list[Item]:
    """Every item of a JSONL file or JSON array, validated; ItemsError lists every bad one.

    Our field names (`id`, `video`, `question`, `options`, `answer`, `category`, `duration`) or VideoMME's
    (`question_id`, `videoID`, `task_type`); relative video paths and videoIDs resolve against `video_dir`,
    else (paths only) the data file's folder.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: {getattr(error, 'strerror', None) or error}") from None
    base = video_dir if video_dir is not None else path.parent
    items: list[Item] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for line, value, problem in _json_values(text):
        try:
            if problem is not None:
                raise ValueError(problem)
            item = _item(value, base, video_dir is not None)
        except ValueError as error:
            problems.append(f"{path}:{line}: {error}")
            continue
        if item.id in first_line:
            problems.append(f"{path}:{line}: id {item.id!r} repeats the id of the item on line {first_line[item.id]}")
            continue
        first_line[item.id] = line
        items.append(item)
    if not items and not problems:
        problems.append(f"{path}: no items")
    if problems:
        raise ItemsError(problems)
    return items


def _json_values(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """(line, value, problem) for each item: problem is None, or why the JSON there cannot be read."""
    if text.lstrip().startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            yield error.lineno, None, f"not valid JSON ({error.msg}, column {error.colno})"
            return
        yield from _array_elements(text)
        return
    # Not splitlines(): JSON strings may hold U+2028 and the like, which are not line breaks in JSONL.
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                yield number, json.loads(line), None
            except json.JSONDecodeError as error:
                yield number, None, f"not valid JSON ({error.msg}, column {error.colno})"


def _array_elements(text: str) -> Iterator[tuple[int, Any, None]]:
    """The elements of a valid JSON array with the line each starts on."""
    decoder = json.JSONDecoder()
    space = re.compile(r"[ \t\r\n]*")
    at = text.index("[") + 1
    line, counted = 1, 0
    while True:
        at = space.match(text, at).end()
        if text[at] == "]":
            return
        line += text.count("\n", counted, at)
        counted = at
        value, at = decoder.raw_decode(text, at)
        yield line, value, None
        at = space.match(text, at).end()
        if text[at] == ",":
            at += 1


def _first(record: dict, *names: str) -> Any:
    return next((record[name] for name in names if name in record), None)


def _item(value: Any, base: Path, has_video_dir: bool) -> Item:
    """An Item from one JSON value; ValueError names every problem with it, on one line."""
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    problems: list[str] = []
    identifier = _first(value, "id", "question_id")
    if identifier is None:
        problems.append("missing 'id' (or VideoMME's 'question_id')")
    elif isinstance(identifier, bool) or not isinstance(identifier, (str, int)) or not str(identifier).strip():
        problems.append("'id' must be a non-empty string or an integer")
    video = _video(value, base, has_video_dir, problems)
    question = value.get("question")
    if not isinstance(question, str) or not question.strip():
        problems.append("missing 'question'" if question is None else "'question' must be a non-empty string")
    options = _options(value.get("options"), problems)
    answer = value.get("answer")
    if answer is None:
        problems.append("missing 'answer'")
    elif not isinstance(answer, str) or answer.strip().upper() not in list(LETTERS[: len(options) or 26]):
        shown = f"the letters A-{LETTERS[len(options) - 1]}" if options else "a letter"
        problems.append(f"'answer' {answer!r} is not one of {shown}")
    category = _first(value, "category", "task_type")
    if category is not None and not isinstance(category, str):
        problems.append("'category' must be a string")
    duration = value.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (str, int, float))):
        problems.append("'duration' must be a label or a number of seconds")
    if problems:
        raise ValueError("; ".join(problems))
    return Item(str(identifier).strip(), video, question.strip(), options, answer.strip().upper(), category, duration)


def _video(value: dict, base: Path, has_video_dir: bool, problems: list[str]) -> str:
    if "video" in value:
        video = value["video"]
        if not isinstance(video, str) or not video.strip():
            problems.append("'video' must be a path")
            return ""
        return str(base / Path(video).expanduser())  # an absolute path stays as it is
    if "videoID" in value:
        video_id = value["videoID"]
        if not isinstance(video_id, str) or not video_id.strip():
            problems.append("'videoID' must be a non-empty string")
            return ""
        if not has_video_dir:
            problems.append("'videoID' needs --video-dir, the folder holding the videos")
            return ""
        candidates = [base / f"{video_id}{suffix}" for suffix in VIDEO_ID_SUFFIXES]
        return str(next((path for path in candidates if path.exists()), candidates[0]))
    problems.append("missing 'video' (or VideoMME's 'videoID' with --video-dir)")
    return ""


_LETTERED = re.compile(r"\(?([A-Z])[.):]\s*(.*)", re.S)  # "A. text", "(A) text", "A) text", "A: text"


def _options(options: Any, problems: list[str]) -> tuple[str, ...]:
    """Option texts without their letters. Options are lettered in order; they are taken as written with
    their letters ("A. text") when the first starts with "A", and then every one must carry its own."""
    if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS) or not all(
        isinstance(option, str) and option.strip() for option in options
    ):
        problems.append("'options' must be a list of 2 to 26 non-empty strings")
        return ()
    first = _LETTERED.fullmatch(options[0].strip())
    if not (first and first.group(1) == "A"):
        return tuple(option.strip() for option in options)
    texts = []
    for letter, option in zip(LETTERS, options):
        lettered = _LETTERED.fullmatch(option.strip())
        if not lettered or lettered.group(1) != letter or not lettered.group(2).strip():
            problems.append(f"option {option!r} should read '{letter}. text', lettered in order like the first")
            return ()
        texts.append(lettered.group(2).strip())
    return tuple(texts)


def missing_videos(items: Sequence[Item]) -> list[str]:
    return sorted({item.video for item in items if not Path(item.video).exists()})


# --- prompt and answer --------------------------------------------------------------------------------------


def prompt(item: Item) -> str:
    """lmms-eval's VideoMME prompt: preamble, question, one lettered option a line, instruction."""
    letters = list(item.letters)
    listed = ", ".join(letters[:-1]) + (", or " if len(letters) > 2 else " or ") + letters[-1]
    options = "\n".join(f"{letter}. {text}" for letter, text in zip(letters, item.options))
    return f"{PREAMBLE.format(letters=listed)}\n{item.question}\n{options}\n\n{POST_PROMPT}"


_QUOTES = r"\s*_`'\""
_OPENING = re.compile(rf"[{_QUOTES}(\[]*([A-Z])[{_QUOTES}]*(?:$|[.):\],])")
_PHRASE = re.compile(rf"(?i:\b(?:answer|option|choice)(?:\s+is)?\s*:?)[{_QUOTES}(\[]*([A-Z])\b")
_BRACKETED = re.compile(r"[(\[]([A-Z])[)\]]")


def extract_letter(reply: str, options: Sequence[str]) -> str | None:
    """The option letter a reply gives, or None when it gives none that can be recognised.

    Tried in order: a reply that opens with a letter ("B", "(B)", "B. text", "B) text", "**B**"); a letter
    after "answer", "option" or "choice" ("The answer is B", "Answer: (C)"); exactly one bracketed letter
    anywhere ("I think (B) fits"); the text of exactly one option, as the whole reply or within it. A
    letter beyond the options' counts as none. "A man walks in" is not the letter A: a letter must stand
    alone, closed by the end of the reply or by punctuation.
    """
    letters = LETTERS[: len(options)]
    text = reply.strip()
    opening = _OPENING.match(text)
    if opening and opening.group(1) in letters:
        return opening.group(1)
    for match in _PHRASE.finditer(text):
        if match.group(1) in letters:
            return match.group(1)
    bracketed = {match.group(1) for match in _BRACKETED.finditer(text)} & set(letters)
    if len(bracketed) == 1:
        return bracketed.pop()
    return _option_named(text, options, letters)


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _option_named(text: str, options: Sequence[str], letters: str) -> str | None:
    reply = _words(text)
    if not reply:
        return None
    names = [_words(option) for option in options]
    exact = [letter for letter, name in zip(letters, names) if name == reply]
    if len(exact) == 1:
        return exact[0]
    within = [
        letter for letter, name in zip(letters, names) if name and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", reply)
    ]
    return within[0] if len(within) == 1 else None


# --- the grid of (method, ratio) pairs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    method: Method
    ratio: float

    @property
    def label(self) -> str:
        return f"{self.method.value} {self.ratio:g}"


def grid(methods: Iterable[Method], ratios: Iterable[float]) -> list[Case]:
    """A method that keeps every token (`none`) once at ratio 1, every other method at each ratio; in the
    order given, without repeats."""
    ratios = list(ratios)
    cases: list[Case] = []
    for method in methods:
        for ratio in ratios if method.traits.compresses else [1.0]:
            case = Case(method, float(ratio))
            if case not in cases:
                cases.append(case)
    return cases


def _key(record: dict) -> tuple[str, str, float]:
    return record["id"], record["method"], record["ratio"]


def pending(items: Sequence[Item], cases: Sequence[Case], records: Iterable[dict]) -> list[tuple[Item, list[Case]]]:
    """Each item with the pairs it still needs: those with no answer in `records` (a pair that failed
    before is tried again)."""
    answered = {_key(record) for record in records if record.get("error") is None}
    work = []
    for item in items:
        todo = [case for case in cases if (item.id, case.method.value, case.ratio) not in answered]
        if todo:
            work.append((item, todo))
    return work


# --- the output directory -----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def manifest(data: Path, compared: Sequence[Settings], video_dir: Path | None) -> dict[str, Any]:
    """What a run's predictions belong to: the data file's bytes and the settings that change answers
    (`compared`: one per method; a flag only some methods take counts where it is set)."""
    values = {name: _plain(next((getattr(s, name) for s in compared if getattr(s, name) is not None), None))
              for name in IDENTITY}
    values["video_dir"] = str(video_dir.resolve()) if video_dir is not None else None
    # Only when used, so that a run from before these options existed still resumes.
    said = {name: _plain(getattr(compared[0], name)) for name in SPEECH_IDENTITY if getattr(compared[0], name)}
    if said.get("subtitles", "auto") != "auto":
        said["subtitles"] = str(Path(said["subtitles"]).resolve())
    values.update(said)
    if compared[0].max_pixels is not None:
        values["max_pixels"] = compared[0].max_pixels
    if compared[0].repeats:  # only a lossy tolerance changes answers
        values["repeats"] = compared[0].repeats
    if any(settings.random_weights for settings in compared):  # noise answers never resume a real run, nor the reverse
        values["random_weights"] = True
    return {"format": FORMAT, "data_sha256": file_digest(data), "settings": values}


class RunDirectory:
    """`--output DIR`. Checked, and a previous run's predictions read, when made: before a model loads.
    Written to only from `start`, once the run is about to answer."""

    def __init__(self, directory: Path, manifest: dict[str, Any], force: bool) -> None:
        self.directory = directory
        self.manifest = manifest
        self.records: list[dict] = []
        self.resuming = False
        self._complete_bytes: int | None = None  # where a crash's partial last line starts, to cut it off
        self._predictions: io.TextIOWrapper | None = None
        if directory.exists() and not directory.is_dir():
            raise InputError(f"--output {directory}: exists and is not a directory")
        if force or not directory.is_dir() or not any(directory.iterdir()):
            return
        previous = _read_manifest(directory / MANIFEST)
        if previous is None:
            raise InputError(
                f"--output {directory}: not empty and not a dytok eval run; use --force to write into it "
                "anyway, or another directory"
            )
        if previous != manifest:
            raise InputError(
                f"--output {directory}: holds a run of {_difference(previous, manifest)}; use --force to start "
                "it over, or another directory"
            )
        self.resuming = True
        self.records, self._complete_bytes = _read_predictions(directory / PREDICTIONS)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        predictions = self.directory / PREDICTIONS
        if not self.resuming:
            # --force replaces dytok's own files only; anything else in the directory stays.
            for name in OUTPUTS:
                (self.directory / name).unlink(missing_ok=True)
            write_atomically(self.directory / MANIFEST, json.dumps(self.manifest, indent=2) + "\n")
        elif self._complete_bytes is not None:
            with open(predictions, "r+b") as handle:
                handle.truncate(self._complete_bytes)
        self._predictions = open(predictions, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        """One pair's record, on disk once this returns: a crash loses at most the pair in flight."""
        assert self._predictions is not None, "start() first"
        self._predictions.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._predictions.flush()
        self.records.append(record)

    def close(self) -> None:
        if self._predictions is not None:
            self._predictions.close()
            self._predictions = None

    def write_summary(self, summary: dict) -> Path:
        path = self.directory / SUMMARY
        write_atomically(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return path


def _read_manifest(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and "data_sha256" in value else None


def _difference(previous: dict, current: dict) -> str:
    parts = []
    if previous.get("data_sha256") != current["data_sha256"]:
        parts.append("other data")
    before = previous.get("settings") or {}
    changed = [
        f"{name} {before.get(name)!r}, now {value!r}" for name, value in current["settings"].items()
        if before.get(name) != value
    ]
    if changed:
        parts.append(f"other settings ({'; '.join(changed)})")
    return " and ".join(parts) or "another format"


def _read_predictions(path: Path) -> tuple[list[dict], int | None]:
    """The records, and where a last line cut short by a crash starts (None if the file ends cleanly)."""
    if not path.exists():
        return [], None
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    records = []
    for number, line in enumerate(data[:complete].split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            _key(record)
        except (ValueError, TypeError, KeyError):
            raise InputError(
                f"{path}:{number}: not a prediction record; delete that line, or use --force to start over"
            ) from None
        records.append(record)
    return records, complete if complete < len(data) else None


# --- the run ------------------------------------------------------------------------------------------------


class Progress(Protocol):
    """What `run` reports as it goes (`render.BatchProgress` shows it on a terminal)."""

    def start_video(self, video: str) -> None: ...
    def stage(self, message: str) -> None: ...
    def advance(self) -> None: ...
    def error(self, message: str) -> None: ...
    def note(self, message: str) -> None: ...


class _Silent:
    def start_video(self, video: str) -> None:
        pass

    def stage(self, message: str) -> None:
        pass

    def advance(self) -> None:
        pass

    def error(self, message: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass


def _case_pipeline(settings: Settings, case: Case, shared: Pipeline) -> Pipeline:
    """`settings` (its method's, `Settings.for_methods`) at the case's ratio, on the shared models."""
    variant = settings.with_method(case.method, case.ratio)
    return Pipeline(variant, model=shared.model, prior=shared.prior if variant.prior_model else None)


def _pair_timings(shared: dict[str, float], case: Case) -> dict[str, float]:
    """The item's decoding and vision time, counted in every pair as though it ran for that pair alone."""
    timings = {"decode_s": shared["decode_s"], "vision_s": shared["vision_s"]}
    if case.method.traits.separate_prior_pass and "prior_vision_s" in shared:
        timings["prior_vision_s"] = shared["prior_vision_s"]
    return timings


def _answered(item: Item, case: Case, answer: Answer) -> dict[str, Any]:
    prediction = extract_letter(answer.text, item.options)
    return {
        "id": item.id, "method": case.method.value, "ratio": case.ratio, "prediction": prediction,
        "answer": item.answer, "correct": prediction == item.answer, "error": None,
        "visual_tokens": answer.plan.kept_tokens,
        "timings": {key: round(answer.timings.get(key, 0.0), 4) for key in TIMING_KEYS},
        "response": answer.text,  # what is scored: the answer alone, never the reasoning before it
        "reasoning": answer.reasoning,
    }


def _failed(item: Item, case: Case, message: str) -> dict[str, Any]:
    return {
        "id": item.id, "method": case.method.value, "ratio": case.ratio, "prediction": None,
        "answer": item.answer, "correct": False, "error": message, "visual_tokens": None, "timings": None,
        "response": None, "reasoning": None,
    }


def run(
    work: Sequence[tuple[Item, Sequence[Case]]],
    cases: Sequence[Case],
    compared: Sequence[Settings],
    output: RunDirectory,
    *,
    model: VideoModel | None = None,
    prior: VideoModel | None = None,
    progress: Progress | None = None,
    cache: VisualCache | None = None,
) -> int:
    """Answer every pending pair of `work` (see `pending`), appending each to the run's predictions as it
    completes; returns how many failed.

    `compared` holds one Settings per method (`Settings.for_methods`); the one with an assistant prior
    model, if any, prepares each video, so it is also encoded for the prior model. Models load here unless
    given.
    """
    progress = progress or _Silent()
    by_method = {settings.method: settings for settings in compared}
    preparing = next((settings for settings in compared if settings.prior_model), compared[0])
    if model is None:
        progress.stage(f"Loading {preparing.model}")
    shared = Pipeline(preparing, model=model, prior=prior, cache=cache)
    pipelines = {case: _case_pipeline(by_method[case.method], case, shared) for case in cases}
    for pipeline in pipelines.values():
        if pipeline.prior_name is not None:
            # Resolved now: a layer range the model lacks is an error of the command, not of every pair.
            pipeline.prior_layers  # noqa: B018
    output.start()
    failed = 0
    try:
        for item, todo in work:
            progress.start_video(item.video)
            try:
                visual = shared.prepare(item.video, progress.stage)
            except PER_VIDEO_ERRORS as error:
                message = one_line(error)
                progress.error(f"{item.id}: {message}")
                for case in todo:
                    output.append(_failed(item, case, message))
                failed += len(todo)
                progress.advance()
                continue
            if visual.transcript is not None and visual.transcript.note:
                progress.note(f"{item.id}: {visual.transcript.note}")
            question = prompt(item)
            for case in todo:
                own = dataclasses.replace(visual, timings=_pair_timings(visual.timings, case))
                try:
                    answer = pipelines[case].ask(own, question, on_stage=progress.stage)
                except PER_VIDEO_ERRORS as error:
                    message = one_line(error)
                    progress.error(f"{item.id} ({case.label}): {message}")
                    output.append(_failed(item, case, message))
                    failed += 1
                else:
                    output.append(_answered(item, case, answer))
            for pipeline in pipelines.values():
                pipeline.release()
            progress.advance()
    finally:
        output.close()
    return failed


# --- results ------------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _by(answered: list[tuple[Item, dict]], label: Callable[[Item], str | None]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[bool]] = {}
    for item, record in answered:
        name = label(item)
        if name is not None:
            groups.setdefault(name, []).append(record["correct"])
    return {name: {"answered": len(marks), "accuracy": sum(marks) / len(marks)} for name, marks in sorted(groups.items())}


def _result(items: Sequence[Item], case: Case, latest: dict[tuple, dict]) -> dict[str, Any]:
    pairs = [(item, latest.get((item.id, case.method.value, case.ratio))) for item in items]
    answered = [(item, record) for item, record in pairs if record is not None and record["error"] is None]
    records = [record for _, record in answered]
    return {
        "method": case.method.value,
        "ratio": case.ratio,
        "items": len(items),
        "answered": len(answered),
        "errors": sum(record is not None and record["error"] is not None for _, record in pairs),
        "accuracy": sum(record["correct"] for record in records) / len(records) if records else None,
        "by_category": _by(answered, lambda item: item.category),
        "by_duration": _by(answered, lambda item: item.duration if isinstance(item.duration, str) else None),
        "total_s": _mean([record["timings"]["total_s"] for record in records]),
        "prefill_s": _mean([record["timings"]["prefill_s"] for record in records]),
        "visual_tokens": _mean([record["visual_tokens"] for record in records]),
    }


def summarise(items: Sequence[Item], cases: Sequence[Case], records: Iterable[dict], manifest: dict) -> dict[str, Any]:
    """One result per case over `items`, from the records (a pair recorded twice, a failure then its
    retry, counts as its later record). Accuracy is over the pairs answered; failed pairs count in
    `errors`. Speed-ups divide `none`'s mean times in this run by the case's."""
    latest = {_key(record): record for record in records}
    results = [_result(items, case, latest) for case in cases]
    baseline = next((result for result in results if result["method"] == BASELINE.value), None)
    for result in results:
        for measure, name in (("total_s", "speedup_total"), ("prefill_s", "speedup_prefill")):
            usable = baseline is not None and baseline[measure] and result[measure]
            result[name] = baseline[measure] / result[measure] if usable else None
    return {
        "format": FORMAT,
        "data_sha256": manifest["data_sha256"],
        "settings": manifest["settings"],
        "items": len(items),
        "results": results,
    }


def plot_pareto(summary: dict[str, Any], path: Path) -> None:
    """Accuracy against mean seconds per answer and against mean visual tokens kept: one line per method,
    points labelled with their ratio; a PNG of PARETO_SIZE pixels, written atomically. ImportError when
    matplotlib is missing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = PARETO_SIZE
    # A Figure of its own on the Agg canvas: no pyplot, so no global backend or figure state.
    figure = Figure(figsize=(width / _PARETO_DPI, height / _PARETO_DPI), dpi=_PARETO_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    by_method: dict[str, list[dict]] = {}
    for result in summary["results"]:
        if result["accuracy"] is not None:
            by_method.setdefault(result["method"], []).append(result)
    panels = zip(figure.subplots(1, 2), ("total_s", "visual_tokens"), ("mean seconds per answer", "mean visual tokens kept"))
    for axes, measure, label in panels:
        for method, results in by_method.items():
            results = sorted(results, key=lambda result: result[measure])
            xs = [result[measure] for result in results]
            ys = [100 * result["accuracy"] for result in results]
            axes.plot(xs, ys, marker="o", label=method)
            for result, x, y in zip(results, xs, ys):
                axes.annotate(f"{result['ratio']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axes.set_xlabel(label)
        axes.set_ylabel("accuracy (%)")
        axes.grid(alpha=0.3)
        if by_method:
            axes.legend(fontsize=8)
    settings = summary["settings"]
    figure.suptitle(f"{settings['model']} · {settings['frames']} frames · {summary['items']} items", fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_PARETO_DPI)
    write_atomically(path, buffer.getvalue())
