"""What keeps `charter serve`'s embedded servers tied to it: a lock on the data directory, and a
watchdog that restarts an embedded server that dies and stops them all at the end.

Together with the parent-death signal of the children (see `infrastructure.embedded.process`), no embedded
PostgreSQL or nats-server outlives the `charter serve` that started it, and two never share one data
directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from infrastructure.embedded.nats import EmbeddedNats
from infrastructure.embedded.postgres import EmbeddedPostgres
from infrastructure.embedded.process import EmbeddedServerError

__all__ = ["DataDirBusy", "Watchdog", "data_dir_lock"]

_log = logging.getLogger(__name__)

LOCK_FILE = "serve.lock"


class DataDirBusy(EmbeddedServerError):
    """Another live process holds the data directory's lock."""


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold `<data_dir>/serve.lock` (an exclusive `flock`) for the duration; the file names the holder's pid.

    The kernel releases the lock when its holder dies, however it dies, so a serve killed with `kill -9`
    never blocks the next one; the descriptor is close-on-exec, so no child inherits the lock.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirBusy(
            f"another charter serve (pid {holder}) is using {data_dir} (lock {path}); "
            "stop it first, or give this one its own CHARTER_DATA_DIR"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


Server = EmbeddedPostgres | EmbeddedNats


def _name(server: Server) -> str:
    return "PostgreSQL" if isinstance(server, EmbeddedPostgres) else "nats-server"


class Watchdog:
    """Restarts an embedded server that dies (same port, so clients reconnect), and stops them all on `close()`.

    It runs in its own thread, which also does the final stop: a child's parent-death signal comes when
    the thread that started it ends, so the servers this thread restarted stay up until they are
    stopped in order. If a server cannot be restarted within `restart_for` seconds, `failure` says why
    and `on_failure` is called (serve then stops and exits non-zero).
    """

    def __init__(self, servers: list[Server], *, interval: float = 0.5, restart_for: float = 30.0) -> None:
        self.servers = servers
        self.interval = interval
        self.restart_for = restart_for
        self.failure: str | None = None
        self.on_failure: Callable[[], None] = lambda: None
        self._closing = threading.Event()
        # Not a daemon: the interpreter waits for it to stop the servers even if the main thread is interrupted.
        self._thread = threading.Thread(target=self._run, name="embedded-watchdog")

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching and stop every server (last started, first stopped); wait for it."""
        self._closing.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._closing.wait(self.interval):
                dead = next((server for server in self.servers if not server.is_running), None)
                if dead is not None and not self._revive(dead):
                    self.on_failure()
                    self._closing.wait()
        except Exception as error:  # noqa: BLE001 - the watchdog must report, not vanish
            self.failure = f"the embedded server watchdog failed: {error!r}"
            self.on_failure()
            self._closing.wait()
        finally:
            for server in reversed(self.servers):
                try:
                    server.stop()
                except EmbeddedServerError as error:
                    _log.warning("could not stop the embedded %s: %s", _name(server), error)

    def _revive(self, server: Server) -> bool:
        name = _name(server)
        _log.warning("embedded %s (pid %s) died; restarting it on port %s", name, server.pid, server.port)
        deadline = time.monotonic() + self.restart_for
        while not self._closing.is_set():
            try:
                server.restart()
            except EmbeddedServerError as error:
                if time.monotonic() >= deadline:
                    self.failure = f"embedded {name} died and could not be restarted: {error}"
                    _log.error("%s", self.failure)
                    return False
                _log.warning("embedded %s did not restart yet (%s); trying again", name, str(error).splitlines()[0])
                self._closing.wait(1.0)
                continue
            _log.warning("embedded %s restarted (pid %s, port %s)", name, server.pid, server.port)
            return True
        return True
