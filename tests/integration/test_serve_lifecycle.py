"""`charter serve`'s embedded servers never outlive it and never run twice on one data directory.

Real `charter serve` subprocesses with embedded PostgreSQL and NATS, each test on its own temporary data
directory and its own pinned ports (the run's shared servers are never touched). The embedded servers are
found through /proc: a process whose command line names the test's data directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from infrastructure.embedded.nats import EmbeddedNats
from infrastructure.embedded.postgres import EmbeddedPostgres
from infrastructure.embedded.process import find_free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux's")

CHARTER = Path(sys.executable).parent / "charter"
START_TIMEOUT = 90.0


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def servers_on(data_dir: Path) -> dict[str, list[int]]:
    """PIDs of the postmasters and nats-servers whose command line names a directory under `data_dir`."""
    found: dict[str, list[int]] = {"postgres": [], "nats-server": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if state.split()[1] in {"Z", "X"} or not any(arg.startswith(f"{data_dir}/") for arg in args):
            continue
        program = Path(args[0]).name
        if program in found:
            found[program].append(int(entry.name))
    return found


class Serve:
    """One `charter serve` subprocess on `data_dir` (embedded servers: no database or NATS URL)."""

    def __init__(self, data_dir: Path, pg_port: int, nats_port: int, label: str) -> None:
        self.data_dir = data_dir
        self.port = find_free_port()
        self.log = data_dir.parent / f"serve-{label}.log"
        env = {k: v for k, v in os.environ.items() if k not in {"CHARTER_DATABASE_URL", "CHARTER_NATS_URL"}}
        env.update(
            CHARTER_DATA_DIR=str(data_dir),
            CHARTER_EMBEDDED_PG_PORT=str(pg_port),
            CHARTER_EMBEDDED_NATS_PORT=str(nats_port),
        )
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [str(CHARTER), "serve", "--port", str(self.port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def answers(self, path: str = "/health") -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.output()[-3000:]}")
        try:
            return httpx.get(self.url + path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self) -> None:
        wait_for(lambda: self.answers("/ready"), START_TIMEOUT, f"serve on {self.url} to be ready")


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory of the test's own directly under the system temporary directory: pytest's `tmp_path`
    sits in a directory that every pytest session starting on the machine makes private again (0700),
    which the embedded PostgreSQL, running as `postgres` when tests run as root, could not traverse."""
    path = Path(tempfile.mkdtemp(prefix="charter-serve-test-")).resolve()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def spawn(root: Path) -> Iterator[Callable[..., Serve]]:
    """Starts serves; afterwards kills any still running and every server left on the test's data dirs."""
    started: list[Serve] = []

    def start(data_dir: Path, pg_port: int, nats_port: int) -> Serve:
        started.append(Serve(data_dir, pg_port, nats_port, str(len(started))))
        return started[-1]

    yield start
    for serve in started:
        if serve.process.poll() is None:
            serve.process.kill()
        serve.process.wait()
    for pids in servers_on(root).values():
        for pid in pids:
            os.kill(pid, signal.SIGKILL)


NO_SERVERS = {"postgres": [], "nats-server": []}


def exactly_one_each(data_dir: Path) -> dict[str, list[int]]:
    servers = servers_on(data_dir)
    assert len(servers["postgres"]) == 1 and len(servers["nats-server"]) == 1, servers
    return servers


def start_over_leftovers(data_dir: Path, spawn: Callable[..., Serve], pg_port: int, nats_port: int) -> Serve:
    """Servers left on the data directory by a process that is gone from it (as after a `kill -9` of a
    serve that could not take its children along; started here, on other ports): serve stops them,
    says so, and starts its own on the pinned ports."""
    leftover_pg = EmbeddedPostgres(data_dir / "postgres", port=find_free_port())
    leftover_pg.start()
    leftover_nats = EmbeddedNats(data_dir / "nats", port=find_free_port())
    leftover_nats.start()
    try:
        serve = spawn(data_dir, pg_port, nats_port)
        serve.wait_ready()
        output = serve.output()
        assert f"PostgreSQL (pid {leftover_pg.pid}) is running on {data_dir}/postgres/pgdata without its owner" in output
        assert f"nats-server (pid {leftover_nats.pid}) is running on {data_dir}/nats/jetstream without its owner" in output
        servers = exactly_one_each(data_dir)
        assert servers["postgres"] != [leftover_pg.pid] and servers["nats-server"] != [leftover_nats.pid]
    finally:
        leftover_nats.stop()
        leftover_pg.stop()
    assert f"embedded NATS at nats://127.0.0.1:{nats_port} " in output
    postmaster = Path(f"/proc/{servers['postgres'][0]}/cmdline").read_text().split("\0")
    assert f"port={pg_port}" in postmaster
    return serve


def assert_second_serve_refused(data_dir: Path, first: Serve) -> None:
    before = servers_on(data_dir)
    second = subprocess.run(
        [str(CHARTER), "serve", "--port", str(find_free_port())],
        env=os.environ | {"CHARTER_DATA_DIR": str(data_dir), "CHARTER_DATABASE_URL": "", "CHARTER_NATS_URL": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert f"another charter serve (pid {first.process.pid}) is using {data_dir}" in second.stderr
    assert servers_on(data_dir) == before


def kill_and_see_restarted(data_dir: Path, serve: Serve, program: str, port: int) -> None:
    """kill -9 of an embedded server: serve starts another on the same port, and is ready again."""
    (old,) = servers_on(data_dir)[program]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: [pid for pid in servers_on(data_dir)[program] if pid != old], 30, f"a new {program}")
    assert f"embedded {'PostgreSQL' if program == 'postgres' else program} (pid {old}) died; restarting it on port {port}" in serve.output()
    wait_for(
        lambda: httpx.get(serve.url + "/ready", timeout=2).json()["checks"].get("nats", {}).get("status") == "ok"
        and serve.answers("/ready"),
        30,
        f"serve to be ready again after its {program} was killed",
    )
    exactly_one_each(data_dir)


def stop_under_load(data_dir: Path, serve: Serve) -> None:
    """SIGTERM while requests are in flight: serve and everything it started are gone within 10 s."""
    stop_load = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=serve.url, timeout=5) as client:
            while not stop_load.is_set():
                try:
                    client.get("/ready")
                except httpx.HTTPError:
                    pass

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)  # load, not synchronisation: let requests be in flight when the signal comes
        started = time.monotonic()
        serve.process.send_signal(signal.SIGTERM)
        serve.process.wait(timeout=10)
        wait_for(lambda: servers_on(data_dir) == NO_SERVERS, 10 - (time.monotonic() - started), "no server left")
    finally:
        stop_load.set()
        for worker in workers:
            worker.join()
    assert serve.process.returncode == 0, serve.output()[-3000:]
    assert "embedded servers stopped" in serve.output()


def test_embedded_servers_live_and_die_with_serve(root: Path, spawn: Callable[..., Serve]) -> None:
    """One data directory through a serve's life: leftovers taken over, pinned ports, a second serve
    refused, dead servers restarted, kill -9 of serve taking its servers along, the next serve running
    alone and stopping everything on SIGTERM under load."""
    data_dir = root / "data"
    pg_port, nats_port = find_free_port(), find_free_port()
    first = start_over_leftovers(data_dir, spawn, pg_port, nats_port)
    assert_second_serve_refused(data_dir, first)
    kill_and_see_restarted(data_dir, first, "nats-server", nats_port)
    kill_and_see_restarted(data_dir, first, "postgres", pg_port)

    before = servers_on(data_dir)
    first.process.kill()
    first.process.wait()
    wait_for(lambda: servers_on(data_dir) == NO_SERVERS, 10, "the killed serve's servers to exit")

    second = spawn(data_dir, pg_port, nats_port)
    second.wait_ready()
    after = exactly_one_each(data_dir)
    assert set(after["postgres"]).isdisjoint(before["postgres"])
    assert set(after["nats-server"]).isdisjoint(before["nats-server"])
    stop_under_load(data_dir, second)
