"""Many videos on a Ray cluster, one `Pipeline` (one model load) per Ray actor: `dytok ask --engine ray`
and `dytok summarize --engine ray`.

The engine is generic over a per-video task (`VideoTask`): the videos go into a Ray Dataset as one row
each, and an actor calls the task on a row with its own pipeline. For `ask` the task is `Answer`: a row
carries a video's questions, so one actor call prepares the video once for all of them, exactly as
`batch.run` does locally, and returns the same record dicts; records come back to this process and are
emitted in input order, or Ray writes them as shards into an output directory that a re-run resumes.
`summarize` passes its own task (built by the CLI from the summarize app, which this module does not
import) to `map_videos`, which hands each video's result back as the video completes.

Ray and pyarrow are imported inside functions, so the CLI starts without them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Device, Settings
from ..errors import DytokError, InputError, Interrupted, install_hint
from ..files import TEMPORARY_PREFIX, atomic_path, write_atomically

if TYPE_CHECKING:
    from ..pipeline import Pipeline

Say = Callable[[str], None]  # where a run's notes (or failed pairs' one-line errors) go: the CLI's stderr

# A video whose worker dies (killed, out of memory) is run again on the restarted worker this many
# times; after that it gets error results (`VideoTask.gave_up`) and the run goes on. (Ray Data itself
# retries an actor's tasks without end, so the count is kept here.)
TASK_RETRIES = 2
CONNECT_TIMEOUT_S = 10  # for --ray-address host:port to answer at all
MANIFEST = "dytok-run.json"  # marks an --output directory as a dytok run, with the settings it was made with
# The worker-death test sets this to a path: the first worker that removes the file there exits.
TEST_CRASH_FILE_ENV = "DYTOK_TEST_CRASH_FILE"


class Engine(str, Enum):
    local = "local"  # this process
    ray = "ray"  # Ray actors, one model each


class OutputFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"


@dataclass(frozen=True)
class RayOptions:
    workers: int = 1  # actors in the pool, each holding its own models
    # Fractions put several workers on one GPU. None: one each where the models run on a GPU, else none
    # (`gpus_per_worker`).
    gpus_per_worker: float | None = None
    address: str | None = None  # None: RAY_ADDRESS if set, else a new local Ray; "auto" or host:port joins

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, not {self.workers}")
        if self.gpus_per_worker is not None and not self.gpus_per_worker >= 0:
            raise ValueError(f"--gpus-per-worker must be 0 or more, not {self.gpus_per_worker:g}")


def gpus_per_worker(options: RayOptions, device: Device, cluster_gpus: float) -> float:
    """The GPUs each actor reserves: as given, else one where the models run on a GPU (`--device cuda`, or
    `auto` on a cluster that has any) and none elsewhere. Ray hands an actor the GPUs it reserved (it sets
    `CUDA_VISIBLE_DEVICES`); one that reserved none sees every GPU, so all of them would load onto the first."""
    if options.gpus_per_worker is not None:
        return options.gpus_per_worker
    return 1.0 if device is Device.cuda or (device is Device.auto and cluster_gpus > 0) else 0.0


def require_ray() -> None:
    """A DytokError naming what to install when Ray is not installed: said before any work."""
    _import_ray()


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DytokError(f"--engine ray needs Ray: {install_hint('ray')}") from None
    return ray


@contextlib.contextmanager
def _connected(ray: Any, options: RayOptions, device: Device, note: Say) -> Iterator[RayOptions]:
    """Ray for the length of a run: the caller's own if it already called `ray.init` (a notebook,
    the tests), else a cluster joined or a local one started, shut down afterwards. Yields `options` with
    the GPUs per worker settled for models on `device` on that cluster."""
    if ray.is_initialized():
        yield _check_gpus(ray, options, device, note, started_here=False)
        return
    address = options.address or os.environ.get("RAY_ADDRESS") or "local"
    _check_reachable(address)
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}  # workers' output stays in Ray's log files
    # Ray's C++ core would print a warning per actor on stderr (restartable actors with arguments in
    # the object store, which is how Ray Data makes every actor); an explicit setting wins.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        # The C++ core announces that log level on stderr as it starts; a failure is raised, not printed.
        with _stderr_discarded():
            if address == "local":
                # Nothing about a local run is reported anywhere; an explicit RAY_USAGE_STATS_ENABLED wins.
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                ray.init(address="local", include_dashboard=False, **quiet)
            else:
                ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise DytokError(f"--ray-address {address}: {_one_line(error)}") from None
    try:
        yield _check_gpus(ray, options, device, note, started_here=address == "local")
    finally:
        ray.shutdown()


def _check_gpus(ray: Any, options: RayOptions, device: Device, note: Say, started_here: bool) -> RayOptions:
    """`options` with the GPUs per worker settled (`gpus_per_worker`). Ray would wait for GPUs that never
    come, for every worker; a cluster's autoscaler may still bring them."""
    available = ray.cluster_resources().get("GPU", 0)
    each = gpus_per_worker(options, device, available)
    needed = each * options.workers
    if needed > available + 1e-9:  # 3 x 0.1 is 0.30000000000000004
        given = options.gpus_per_worker is not None
        asked = f"--gpus-per-worker {each:g}" if given else f"one GPU per worker (--device {device.value})"
        if options.workers > 1:
            asked = f"--workers {options.workers} with {asked} need {needed:g} GPUs"
        message = f"{asked}: the Ray cluster has {available:g} GPUs"
        share = math.floor(available / options.workers * 100) / 100
        hint = f"; --gpus-per-worker {share:g} shares them" if share > 0 else ""
        if started_here:
            raise DytokError(message + hint)
        note(f"{message} now; the workers wait for more (Ctrl-C stops){hint}")
    return dataclasses.replace(options, gpus_per_worker=each)


def _check_reachable(address: str) -> None:
    """A host:port that does not answer fails now: Ray would retry it for many minutes."""
    host, _, port = address.rpartition(":")
    if not (host and port.isdigit()) or "://" in host:
        return  # "local", "auto", or a scheme Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise DytokError(f"--ray-address {address}: no Ray cluster answers there ({error.strerror or error})") from None


@contextlib.contextmanager
def _stderr_discarded() -> Iterator[None]:
    """File descriptor 2 to /dev/null, where the C++ core writes."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _quiet(ray: Any, progress_bars: bool) -> Iterator[None]:
    """Ray as this CLI needs it: stdout carries records only, Ray Data's messages stay in its log
    file (dytok prints its own one-line errors), progress bars only when asked."""
    from ray.data import DataContext

    # Ray prints cluster events ("a worker died ...") on the driver's stdout even without
    # log_to_driver, also after the run has ended, so this stays off for the rest of the process.
    # It is the module switch ray.util.rpdb uses to silence the same printer.
    ray._private.worker._worker_logs_enabled = False
    context = DataContext.get_current()
    changes = {
        "print_on_execution_start": False,
        "enable_auto_log_stats": False,
        "enable_progress_bars": progress_bars,
        # Ray's own tqdm bars do not show when workers' output stays off the driver; these draw on stderr.
        "use_ray_tqdm": False,
        "enable_rich_progress_bars": True,
    }
    saved = {name: getattr(context, name) for name in changes}
    consoles = [handler for handler in logging.getLogger("ray.data").handlers if isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)]
    levels = [handler.level for handler in consoles]
    for name, value in changes.items():  # restored afterwards
        setattr(context, name, value)
    for handler in consoles:
        handler.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        for handler, level in zip(consoles, levels):
            handler.setLevel(level)


class _Attempts:
    """How many times each video was started: a second start means its worker died on it."""

    def __init__(self) -> None:
        self.counts: collections.Counter[int] = collections.Counter()

    def begin(self, key: int) -> int:
        self.counts[key] += 1
        return self.counts[key]


def _exit_if_a_test_asks() -> None:
    path = os.environ.get(TEST_CRASH_FILE_ENV)
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        os._exit(1)


def _row_schema() -> Any:
    import pyarrow as pa

    # index: the result's slot in input order; result: the task's result, pickled; fatal: a pickled
    # error that must stop the run.
    return pa.schema([("index", pa.int64()), ("result", pa.binary()), ("attempt", pa.int64()), ("fatal", pa.binary())])


class VideoTask(Protocol):
    """What an actor does with one input row: a dict with at least `video` and `indices` (the slots of
    its results in input order), and whatever else the task put there. Pickled to every actor, so a
    class defined at a module's top level."""

    def __call__(self, pipeline: Pipeline, row: dict[str, Any]) -> list[Any]:
        """One result per slot in `row["indices"]`. A failure that belongs to the video is a result
        (an error record); an exception stops the run, as it would stop a local one."""

    def gave_up(self, settings: Settings, row: dict[str, Any], message: str) -> list[Any]:
        """The results for a video whose worker died too often on it; `message` says so in one line."""


class Answer:
    """`ask`'s task: `batch.run` on one video for the questions in its row; the results are records."""

    def __call__(self, pipeline: Pipeline, row: dict[str, Any]) -> list[Any]:
        from .. import batch

        outcomes: list[batch.Outcome] = []
        batch.run(pipeline, [row["video"]], row["questions"], outcomes.append)
        return [outcome.record for outcome in outcomes]

    def gave_up(self, settings: Settings, row: dict[str, Any], message: str) -> list[Any]:
        from ..pipeline import Pipeline
        from ..record import error_record

        prior_name = Pipeline(settings).prior_name
        return [error_record(row["video"], question, settings, prior_name, message) for question in row["questions"]]


class _Worker:
    """The class-based UDF: one per actor, holding one `Pipeline`, whose models load on the first video."""

    def __init__(self, settings: Settings, task: VideoTask, cache_dir: str | None, cwd: str, attempts: Any) -> None:
        from ..media.cache import VisualCache
        from ..pipeline import Pipeline

        # Relative video paths mean what they meant to the driver (where that directory exists).
        with contextlib.suppress(OSError):
            os.chdir(cwd)
        self.pipeline = Pipeline(settings, cache=VisualCache(cache_dir) if cache_dir else None)
        self.task = task
        self.attempts = attempts

    def __call__(self, videos: Any) -> Any:
        import pyarrow as pa
        import ray

        rows: list[dict[str, Any]] = []
        for video in videos.to_pylist():
            attempt = ray.get(self.attempts.begin.remote(video["indices"][0]))
            if attempt > TASK_RETRIES + 1:
                message = f"{video['video']}: its Ray worker died {TASK_RETRIES + 1} times on it (out of memory or killed); gave up"
                results = self.task.gave_up(self.pipeline.settings, video, message)
            else:
                _exit_if_a_test_asks()
                try:
                    results = self.task(self.pipeline, video)
                except Exception as error:  # a failure that stops a local run stops this one too
                    rows = [{"index": video["indices"][0], "result": b"", "attempt": attempt, "fatal": _pickled(error)}]
                    break
            for index, result in zip(video["indices"], results, strict=True):
                rows.append({"index": index, "result": pickle.dumps(result), "attempt": attempt, "fatal": b""})
        return pa.Table.from_pylist(rows, schema=_row_schema())


def _pickled(error: Exception) -> bytes:
    try:
        return pickle.dumps(error)
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(error).__name__}: {_one_line(error)}"))


def _mapped(ray: Any, settings: Settings, task: VideoTask, rows: list[dict[str, Any]], options: RayOptions,
            cache_dir: Path | None) -> Any:
    """The Ray Dataset of result rows: one input block per video, so a video is the unit that
    streams back, and that is retried when its worker dies."""
    attempts = ray.remote(num_cpus=0)(_Attempts).remote()
    videos = ray.data.from_items(rows, override_num_blocks=len(rows))
    return videos.map_batches(
        _Worker,
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=options.workers),
        num_gpus=options.gpus_per_worker or None,
        fn_constructor_kwargs={
            "settings": settings,
            "task": task,
            "cache_dir": str(cache_dir.resolve()) if cache_dir else None,
            "cwd": os.getcwd(),
            "attempts": attempts,
        },
    )


def _each_result(settings: Settings, task: VideoTask, rows: list[dict[str, Any]], on_result: Callable[[int, Any, int], None],
                 *, options: RayOptions, note: Say, cache_dir: Path | None) -> None:
    """`task` on every row on Ray actors; `on_result(index, result, attempt)` for each result as its
    video completes (in the order videos complete, not input order)."""
    ray = _import_ray()
    with _connected(ray, options, settings.device, note) as options, _quiet(ray, progress_bars=False):
        blocks = _mapped(ray, settings, task, rows, options, cache_dir).iter_batches(batch_size=None, batch_format="pyarrow")
        try:
            for block in blocks:
                for row in block.to_pylist():
                    _raise_fatal(row["fatal"])
                    on_result(row["index"], pickle.loads(row["result"]), row["attempt"])
        finally:
            # Stops the job's remaining work now (an error, Ctrl-C), not when Ray shuts down.
            getattr(blocks, "close", lambda: None)()


def map_videos(
    settings: Settings,
    videos: list[str],
    task: VideoTask,
    emit: Callable[[int, Any], None],
    *,
    options: RayOptions,
    note: Say,
    cache_dir: Path | None = None,
) -> None:
    """`task` on every video, one result each, on Ray actors: `emit(number, result)` as each video
    completes, `number` its place in `videos`. Says on `note` how many were run again after their
    worker died."""
    emitted = retried = 0

    def received(index: int, result: Any, attempt: int) -> None:
        nonlocal emitted, retried
        emitted += 1
        retried += attempt > 1
        emit(index, result)

    rows = [{"video": video, "indices": [number]} for number, video in enumerate(videos)]
    _each_result(settings, task, rows, received, options=options, note=note, cache_dir=cache_dir)
    if emitted != len(videos):
        raise RuntimeError(f"Ray returned {emitted} of {len(videos)} results")
    _note_retried(retried, len(videos), note, "videos")


def _groups(videos: list[str], questions: list[str], done: set[tuple[str, str]] = frozenset()) -> list[dict[str, Any]]:
    """One row per video with the questions still to answer on it; `indices` number the pairs in
    the order the local engine answers them."""
    groups = []
    for number, video in enumerate(videos):
        todo = [(number * len(questions) + k, q) for k, q in enumerate(questions) if (video, q) not in done]
        if todo:
            groups.append({"video": video, "indices": [i for i, _ in todo], "questions": [q for _, q in todo]})
    return groups


def _raise_fatal(fatal: bytes) -> None:
    if fatal:
        raise pickle.loads(fatal)


def _note_retried(retried: int, total: int, note: Say, what: str = "answers") -> None:
    if retried:
        note(f"{retried} of {total} {what} were retried after their Ray worker died")


def run(
    settings: Settings,
    videos: list[str],
    questions: list[str],
    emit: Callable[[Any], None],
    *,
    options: RayOptions,
    note: Say,
    cache_dir: Path | None = None,
) -> int:
    """`batch.run` on Ray: every question on every video, records emitted in input order as soon as
    every earlier one is in; returns the number of failed pairs."""
    from ..batch import Outcome

    total = len(videos) * len(questions)
    ready: dict[int, dict[str, Any]] = {}
    emitted = failed = retried = 0

    def received(index: int, result: dict[str, Any], attempt: int) -> None:
        nonlocal emitted, failed, retried
        retried += attempt > 1
        ready[index] = result
        while emitted in ready:
            record = ready.pop(emitted)
            failed += record["error"] is not None
            emit(Outcome(record, None))
            emitted += 1

    _each_result(settings, Answer(), _groups(videos, questions), received, options=options, note=note, cache_dir=cache_dir)
    if emitted != total:
        raise RuntimeError(f"Ray returned {emitted} of {total} answers")
    _note_retried(retried, total, note)
    return failed


# --- --output DIR: shards written by Ray ----------------------------------------------------------


def record_schema() -> Any:
    """The Arrow schema of a record (see record.py) as Parquet shards store it."""
    import pyarrow as pa

    from ..record import TIMING_KEYS

    frame = pa.struct([(name, pa.int64()) for name in ("index", "frame")] + [("timestamp", pa.float64()), ("weight", pa.float64())]
                      + [(name, pa.int64()) for name in ("budget", "dominant", "contextual")])
    text = ("video", "question", "answer", "reasoning", "model", "prior_model", "method")
    line = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("text", pa.string())])
    subtitles = pa.struct([("source", pa.string()), ("speech", pa.string()), ("lines", pa.list_(line)), ("tokens", pa.int64()),
                           ("note", pa.string()), ("speech_s", pa.float64())])
    return pa.schema(
        [(name, pa.string()) for name in text]
        + [("ratio", pa.float64()), ("dtype", pa.string()), ("backend", pa.string()), ("frames", pa.list_(frame)),
           ("visual_tokens", pa.struct([("full", pa.int64()), ("kept", pa.int64())])), ("tokens_per_frame", pa.int64()),
           ("frame_size", pa.list_(pa.int64())), ("reused_frames", pa.int64()),
           ("reused_prefix_tokens", pa.int64()), ("subtitles", subtitles),
           ("whole", pa.null()),  # always null: --whole answers in one process, never on Ray
           ("timings", pa.struct([(key, pa.float64()) for key in TIMING_KEYS])), ("error", pa.string())]
    )


def write_shard(directory: Path, records: list[dict[str, Any]], output_format: OutputFormat) -> None:
    """One shard file of `records`, complete or absent."""
    path = directory / f"part-{uuid.uuid4().hex}.{output_format.value}"
    if output_format is OutputFormat.jsonl:
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        write_atomically(path, text)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(records, schema=record_schema())
        with atomic_path(path) as temporary:
            pq.write_table(table, temporary)


def read_records(directory: Path) -> list[dict[str, Any]]:
    """Every record in the shards of an --output directory."""
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob("part-*.jsonl")):
        records.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    parquet = sorted(directory.glob("part-*.parquet"))
    if parquet:
        import pyarrow.parquet as pq

        for path in parquet:
            records.extend(pq.read_table(path).to_pylist())
    return records


def _shard_sink(directory: Path, output_format: OutputFormat) -> Any:
    from ray.data import Datasink

    class ShardSink(Datasink):
        """Writes the answers to each video as one shard as soon as they are in, so a stopped run
        loses at most the videos in flight; returns what the driver reports."""

        def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
            records, fatal, retried = [], b"", 0
            for block in blocks:
                for row in block.to_pylist():
                    fatal = fatal or row["fatal"]
                    if row["result"]:
                        records.append(pickle.loads(row["result"]))
                        retried += row["attempt"] > 1
            if records:
                write_shard(directory, records, output_format)
            failed = [f"{record['video']}: {record['error']}" for record in records if record["error"] is not None]
            return {"written": len(records), "failed": failed, "retried": retried, "fatal": fatal}

        def on_write_complete(self, write_result: Any) -> None:
            self.results = list(write_result.write_returns)

        @property
        def supports_distributed_writes(self) -> bool:
            return False  # shards go to DIR on this machine, whatever node answered

    return ShardSink()


def _manifest(settings: Settings, output_format: OutputFormat) -> dict[str, Any]:
    values = {name: getattr(value, "value", value) for name, value in dataclasses.asdict(settings).items()}
    return {"format": output_format.value, "settings": values}


def prepare_output(directory: Path, settings: Settings, output_format: OutputFormat, force: bool) -> None:
    """Make `directory` ready for this run before any work: new or empty, or a run of the same
    settings and format (resumed). Anything else is refused without `force`, and emptied with it."""
    manifest = directory / MANIFEST
    wanted = _manifest(settings, output_format)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--output {directory}: exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        try:
            found = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
        if found != wanted and not force:
            reason = "holds a dytok run with other settings or format" if found else "exists and is not empty"
            raise InputError(f"--output {directory}: {reason} (use --force to replace it)")
        if force:
            for entry in directory.iterdir():
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob(f"{TEMPORARY_PREFIX}*"):  # from a run stopped mid-write
        leftover.unlink()
    if not manifest.exists():
        write_atomically(manifest, json.dumps(wanted, indent=2) + "\n")


def write(
    settings: Settings,
    videos: list[str],
    questions: list[str],
    directory: Path,
    *,
    options: RayOptions,
    output_format: OutputFormat = OutputFormat.jsonl,
    note: Say,
    error: Say,
    force: bool = False,
    cache_dir: Path | None = None,
) -> int:
    """Answer the pairs not yet in `directory` and have Ray write their records there as shards;
    returns the number of pairs that failed in this run."""
    ray = _import_ray()
    prepare_output(directory, settings, output_format, force)
    done = {(record["video"], record["question"]) for record in read_records(directory)}
    groups = _groups(videos, questions, done)
    todo = sum(len(group["indices"]) for group in groups)
    skipped = len(videos) * len(questions) - todo
    results: list[dict[str, Any]] = []
    if groups:
        sink = _shard_sink(directory.resolve(), output_format)
        try:
            with _connected(ray, options, settings.device, note) as options, _quiet(ray, progress_bars=sys.stderr.isatty()):
                _mapped(ray, settings, Answer(), groups, options, cache_dir).write_datasink(sink, ray_remote_args={"num_cpus": 0})
        except KeyboardInterrupt:
            written = len(read_records(directory)) - len(done)
            raise Interrupted(f"interrupted after {written} of {todo} answers, written to {directory}; the same command goes on from there") from None
        results = getattr(sink, "results", [])
    for result in results:
        _raise_fatal(result["fatal"])
    failures = [line for result in results for line in result["failed"]]
    for line in failures:
        error(line)
    _note_retried(sum(result["retried"] for result in results), todo, note)
    written = sum(result["written"] for result in results)
    if written != todo:
        raise RuntimeError(f"Ray wrote {written} of {todo} records")
    already = f", {skipped} already there" if skipped else ""
    note(f"{written} records written to {directory}{already}; {len(failures)} failed")
    return len(failures)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
