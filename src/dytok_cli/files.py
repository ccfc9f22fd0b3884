"""Writing a file whole or not at all, with the mode a plain `open()` gives a new file.

Every file dytok leaves for a person or another run (chapters, eval results, Ray shards, cache entries,
a made clip) is written to a temporary file beside its target and renamed onto it, so a reader never sees
half of one. `tempfile.mkstemp` would create that temporary file readable by its owner only, and the
rename keeps the mode; here it is created with mode 0666 and the kernel takes the umask off (and applies
a directory's default ACL), as for any new file, and that mode is given back to it before the rename in
case a library that was handed its name made it anew. So no umask is read: `os.umask` can only be read
by setting it, a process-wide change that races with the threads of `dytok serve` and the Ray engine.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Temporary files start with this: hidden, and found again by a run that cleans up after a killed one.
TEMPORARY_PREFIX = ".tmp-"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A new empty file beside `path`, for the block to write (by opening it, or by name with a library
    that writes files), renamed onto `path` when the block ends, or removed when it raises."""
    path = Path(path)
    temporary = path.with_name(f"{TEMPORARY_PREFIX}{path.name}.{secrets.token_hex(6)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    mode = os.fstat(descriptor).st_mode & 0o7777
    os.close(descriptor)
    try:
        yield temporary
        # A library given the name may make the file anew with a mode of its own (safetensors: 0600).
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    """`data` (text as UTF-8) to `path`, whole or not at all (see `atomic_path`)."""
    with atomic_path(path) as temporary:
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)
