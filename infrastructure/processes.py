"""Whether a process is alive, as the embedded servers' supervision and the workers' metrics ask it."""

from __future__ import annotations

import os
import re
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, ended but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    match = re.search(r"^State:\s+(\S)", status, re.MULTILINE)
    return not (match and match.group(1) in {"Z", "X"})
