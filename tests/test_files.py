"""Files written whole or not at all (`dytok_cli.files`), with the mode a plain open() gives a new file whatever
the umask. Each of dytok's writers is checked in its own feature's tests with the `umask` fixture; the Ray
engine's here, as its own tests run only under Ray, in a network namespace of their own (test_ray_engine.py)."""

from __future__ import annotations

import os
import threading

import pytest
from conftest import modes, plain_modes

from dytok_cli.files import atomic_path, write_atomically


def test_text_and_bytes_are_written_whole_with_the_mode_open_gives(tmp_path, umask):
    folder = tmp_path / "out"
    folder.mkdir()
    write_atomically(folder / "a.txt", "één\n")
    write_atomically(folder / "b.bin", b"\x00\xff")
    with open(folder / "c.plain", "w") as handle:  # the reference: what a plain open() makes
        handle.write("x")
    assert (folder / "a.txt").read_bytes() == "één\n".encode() and (folder / "b.bin").read_bytes() == b"\x00\xff"
    assert modes(folder) == plain_modes(folder, umask)
    assert modes(folder)["out/a.txt"] == modes(folder)["out/b.bin"] == modes(folder)["out/c.plain"]


def test_a_library_writing_by_name_keeps_the_mode(tmp_path, umask):
    target, anew = tmp_path / "made.txt", tmp_path / "anew.bin"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".tmp-made.txt.")
        with open(temporary, "w") as handle:  # as a library opens the name it is given, truncating
            handle.write("done")
    with atomic_path(anew) as temporary:  # as safetensors does: a new file of its own, private
        temporary.unlink()
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    assert target.read_text() == "done" and modes(target) == plain_modes(target, umask)
    assert modes(anew) == plain_modes(anew, umask)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["anew.bin", "made.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "kept.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("half way")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as temporary:
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [path.name for path in tmp_path.iterdir()] == ["kept.json"]


def test_a_replaced_file_is_replaced_whole(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("a longer old text")
    write_atomically(target, "new")
    assert target.read_text() == "new" and [path.name for path in tmp_path.iterdir()] == ["summary.json"]


def test_writers_in_threads_never_see_each_others_temporaries(tmp_path):
    """As `dytok serve` and the Ray engine write from threads: each write has a temporary of its own."""
    def write(index: int) -> None:
        for round_ in range(20):
            write_atomically(tmp_path / "shared.txt", f"{index} {round_}\n" * 100)

    threads = [threading.Thread(target=write, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = set((tmp_path / "shared.txt").read_text().splitlines())
    assert len(lines) == 1 and [path.name for path in tmp_path.iterdir()] == ["shared.txt"]


@pytest.mark.parametrize("output_format", ["jsonl", "parquet"])
def test_the_ray_engines_shards_and_manifest_get_the_mode_open_would(tmp_path, umask, output_format):
    """Written in this process, without Ray: what the engine's sink writes, as it writes it."""
    from dytok_cli.apps.ray_engine import OutputFormat, prepare_output, read_records, write_shard
    from dytok_cli.config import Settings

    if output_format == "parquet":
        pytest.importorskip("pyarrow")
    output, fmt = tmp_path / "out", OutputFormat(output_format)
    prepare_output(output, Settings(model="tiny"), fmt, force=False)
    write_shard(output, [{"video": "a.mp4", "question": "what happens?", "answer": "a ball"}], fmt)
    assert [record["answer"] for record in read_records(output)] == ["a ball"]
    assert len(list(output.iterdir())) == 2  # the manifest and one shard
    assert modes(output) == plain_modes(output, umask)
