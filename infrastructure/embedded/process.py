"""What the embedded PostgreSQL and NATS servers share: the error they raise, free ports, the
parent-death signal of their children, and finding and stopping a server's process.

The children die with the process that started them, even on ``kill -9``: on Linux each one asks the
kernel for a parent-death signal (``prctl PR_SET_PDEATHSIG``, see ``die_with_parent``) before it execs.
The kernel sends that signal when the *thread* that started the child ends, so start servers from a
thread that lives as long as they should (the main thread, or a supervisor thread).  A server left
running by a killed process elsewhere (no parent-death signal) is found on the next start through its
pid file and its command line, which names the data directory (``processes_naming``, ``names``), and
is stopped (``terminate``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from infrastructure.processes import pid_alive

__all__ = [
    "LOOPBACK",
    "EmbeddedServerError",
    "Started",
    "choose_port",
    "die_with_parent",
    "file_lock",
    "find_free_port",
    "log_tail",
    "names",
    "processes_naming",
    "terminate",
]

LOOPBACK = "127.0.0.1"
_LOG_TAIL_LINES = 40


class EmbeddedServerError(RuntimeError):
    """Raised when an embedded server cannot be started or stopped."""


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is currently free.

    The port is released before returning, so another process could in
    principle grab it first; callers that bind it shortly afterwards are
    practically always fine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies (Linux only).

    ``prctl(PR_SET_PDEATHSIG)`` survives ``execve`` and runs after Popen's
    ``setuid`` (which would clear it).  It is tied to the thread that forks: the
    signal comes when that thread ends.  If the parent died between ``fork``
    and ``prctl``, the child exits before it execs.  Elsewhere (no ``prctl``) children
    are only stopped by ``stop()``/``atexit`` and by the stale-process check on
    the next start.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _cmdline(pid: int) -> list[str] | None:
    """The command line of ``pid`` from /proc, or ``None`` when unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def processes_naming(path: Path) -> list[int]:
    """PIDs of live processes whose command line has ``path`` as one argument (Linux /proc)."""
    wanted = str(path)
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit() and wanted in (_cmdline(int(entry.name)) or ()) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def names(pid: int, path: Path, expected_names: set[str]) -> bool | None:
    """Whether live ``pid`` is one of our servers for ``path``: a program named one of
    ``expected_names`` whose command line names ``path``; ``None`` when it cannot tell (no /proc)."""
    if not pid_alive(pid):
        return False
    args = _cmdline(pid)
    if args:
        return Path(args[0]).name in expected_names and str(path) in args
    name = _process_name(pid)
    return None if name is None else name in expected_names


def terminate(pid: int, signals: tuple[signal.Signals, ...], wait: float = 5.0) -> bool:
    """Send each of ``signals`` in turn to ``pid`` until it exits; return whether it did."""
    for sig in signals:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_for_exit(pid, wait):
            return True
    return False


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit; return whether it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def choose_port(port_file: Path, preferred: int | None) -> int:
    """The port remembered in ``port_file`` if free, else ``preferred`` if free, else any free port."""
    try:
        remembered: int | None = int(port_file.read_text().strip())
    except (OSError, ValueError):
        remembered = None
    for candidate in (remembered, preferred):
        if candidate and _port_free(candidate):
            return candidate
    return find_free_port()


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file, or a placeholder."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<no log at {path}>"
    return "\n".join(text.splitlines()[-lines:])


def _process_name(pid: int) -> str | None:
    """Return the command name of ``pid`` from /proc, if available."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` for the duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Started:
    """`with server:` starts it (the subclass's `start`) and stops it again (its `stop`)."""

    def __enter__(self) -> Self:
        self.start()  # type: ignore[attr-defined]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()  # type: ignore[attr-defined]
