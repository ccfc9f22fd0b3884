"""Loading a model by name when the hub cannot be reached (exit 3, naming what runs without a download) or
refuses the name (exit 2), through the installed script; and the dtype `--dtype auto` picks per device and CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import torch
from conftest import run_together
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)

from dytok_cli import models
from dytok_cli.config import DType

DYTOK = shutil.which("dytok")
# Nothing listens on the discard port: every request to the hub is refused at once.
UNREACHABLE = "http://127.0.0.1:9"
# The hub library retries an unreachable hub for 1+2+4+8+8 = 23 s before giving up. A run that ends
# within this of one that never touches the network (same imports, decoding and machine load) did
# not retry: a guard against stalls, not a speed measurement.
NO_RETRY_MARGIN_S = 15


def script(*args: str, hf_home: Path, offline: bool) -> tuple[list[str], dict[str, str]]:
    """`dytok ARGS` as a fresh process runs it, with its own hub cache and an unreachable hub."""
    environment = {**os.environ, "NO_COLOR": "1", "HF_HOME": str(hf_home), "HF_ENDPOINT": UNREACHABLE}
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DYTOK_MODEL", "HF_HUB_CACHE"):
        environment.pop(name, None)
    if offline:
        environment["HF_HUB_OFFLINE"] = "1"
    return [DYTOK, *args], environment


def one_line(result: subprocess.CompletedProcess, code: int) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dytok: error: ") and result.returncode == code
    return lines[0]


# What runs without a download, named by every line that says a model cannot be had now (exit 3).
INSTEAD = "pass --model PATH for a local model directory, or --random-weights to run without a download"


def cache_as_hub_model(model_dir: Path, hf_home: Path, repo: str) -> None:
    """Lay `model_dir` out in `hf_home` the way a finished hub download leaves it."""
    commit = "0" * 40
    storage = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    shutil.copytree(model_dir, storage / "snapshots" / commit)


@pytest.fixture(scope="module")
def hub_unreachable(tiny_llava_dir, clip, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, float]]:
    """Three runs with the hub unreachable, at once (each a fresh process, as only then does the hub library
    read its settings): a directory without config.json (no network needed: the yardstick), a hub id in no
    cache, and a hub id in the cache."""
    if DYTOK is None:
        pytest.skip("the dytok script is not installed (pip install -e .)")
    hf_home = tmp_path_factory.mktemp("hf-home")
    (hf_home / "not-a-model").mkdir()
    cache_as_hub_model(tiny_llava_dir, hf_home, "someone/tiny-llava")
    runs = {
        "no config": script("ask", str(clip), "--model", str(hf_home / "not-a-model"), hf_home=hf_home, offline=False),
        "uncached": script("ask", str(clip), "--model", "foo/bar", hf_home=hf_home, offline=False),
        "cached": script("ask", str(clip), "--model", "someone/tiny-llava", "--frames", "2", "--max-new-tokens", "3",
                         "--dtype", "float32", "--json", hf_home=hf_home, offline=False),
    }
    return dict(zip(runs, run_together(*runs.values())))


def test_unreachable_hub_is_one_line_without_retries(hub_unreachable):
    _, without_network = hub_unreachable["no config"]
    result, elapsed = hub_unreachable["uncached"]
    line = one_line(result, 3)  # not a usage error: the same command works once the network is back
    assert "'foo/bar'" in line and "not in the local cache" in line and "not reachable" in line
    assert line.endswith(INSTEAD)
    assert elapsed < without_network + NO_RETRY_MARGIN_S


def test_offline_mode_says_not_in_the_local_cache(dytok_here, clip):
    result = dytok_here("ask", str(clip), "--model", "foo/bar")  # the suite runs with HF_HUB_OFFLINE=1
    line = one_line(result, 3)
    assert "not in the local cache" in line and line.endswith(INSTEAD)
    assert "reachable" not in line and "set HF_HUB_OFFLINE" not in line


def test_random_weights_is_not_offered_to_a_run_that_has_it(dytok_here, clip):
    result = dytok_here("ask", str(clip), "--model", "foo/bar", "--random-weights")
    note, line = result.stderr.splitlines()  # the note that the weights are random, then the error
    assert note.startswith("--random-weights: ") and line.startswith("dytok: error: ") and result.returncode == 3
    assert "not in the local cache" in line and "--model PATH" in line and "--random-weights" not in line


def hub_error(error_type: type, status: int) -> Exception:
    request = httpx.Request("HEAD", "https://huggingface.co/foo/bar/resolve/main/config.json")
    return error_type(f"{status} from the hub", response=httpx.Response(status, request=request))


@pytest.mark.parametrize("answer, code, fragment", [
    (hub_error(RepositoryNotFoundError, 404), 2, "no such model on the hub"),
    (hub_error(GatedRepoError, 403), 2, "gated"),
    (hub_error(HfHubHTTPError, 503), 3, "the hub answered 503"),
    (httpx.ConnectError("[Errno 101] Network is unreachable"), 3, "the hub is not reachable"),
])
def test_a_name_the_hub_refuses_is_a_usage_error_and_a_hub_that_fails_is_not(dytok_here, clip, monkeypatch, answer,
                                                                             code, fragment):
    def ask_the_hub(*args, **kwargs):
        raise answer

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.get_hf_file_metadata", ask_the_hub)
    line = one_line(dytok_here("ask", str(clip), "--model", "foo/bar"), code)
    assert fragment in line and "'foo/bar'" in line
    assert line.endswith(INSTEAD) is (code == 3)


def wrapped(cause: BaseException, message: str) -> OSError:
    """`cause` as transformers reports it: an OSError raised while handling it."""
    try:
        raise cause
    except BaseException:  # noqa: BLE001 - every cause is wrapped alike
        try:
            raise OSError(message)  # noqa: B904 - transformers raises it so, the cause as its context
        except OSError as error:
            return error


@pytest.mark.parametrize("error, failed", [
    (wrapped(LocalEntryNotFoundError("not cached"), "We couldn't connect to 'https://huggingface.co'"), True),
    (wrapped(hub_error(HfHubHTTPError, 502), "There was a specific connection error"), True),
    (httpx.ReadTimeout("timed out"), True),
    (wrapped(hub_error(RemoteEntryNotFoundError, 404), "foo/bar does not appear to have a file named x"), False),
    (wrapped(hub_error(RepositoryNotFoundError, 401), "foo/bar is not a local folder"), False),
    (OSError("./model does not appear to have a file named model.safetensors"), False),
])
def test_a_failed_fetch_is_told_from_a_model_that_lacks_a_file(error, failed):
    assert models.fetch_failed(error) is failed


def test_directory_without_config_says_what_is_missing(hub_unreachable):
    result, _ = hub_unreachable["no config"]
    assert "no config.json in " in one_line(result, 2) and "not-a-model: not a transformers model directory" in result.stderr


def test_cached_hub_model_answers_with_the_hub_unreachable(hub_unreachable):
    result, _ = hub_unreachable["cached"]
    assert result.returncode == 0 and result.stderr == "", result.stderr  # no retry was logged
    assert json.loads(result.stdout)["answer"] is not None


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_on_cpu_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: native)
    expected = torch.bfloat16 if native else torch.float32
    assert models.resolve_dtype(DType.auto, torch.device("cpu")) == expected
    assert models.resolve_dtype(DType.float32, torch.device("cpu")) == torch.float32


@pytest.mark.parametrize(
    "flags, native",
    [("fpu avx2 avx512f avx512_bf16", True), ("fpu amx_tile amx_bf16", True), ("fpu avx2 avx512f", False)],
)
def test_native_bf16_is_read_from_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert models.cpu_has_native_bf16(cpuinfo) is native
    assert models.cpu_has_native_bf16(tmp_path / "absent") is False
