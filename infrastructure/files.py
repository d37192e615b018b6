"""Files several processes may race to create (keys made on first start): whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def create_once(path: Path, content: bytes, mode: int = 0o600) -> bool:
    """Create `path` holding `content` unless it exists; False when another process made it first.

    The content is written to a temporary file beside it, flushed, then linked into place: a process
    reading `path` finds nothing or the whole file, never a partly written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
