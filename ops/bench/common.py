"""Pieces every benchmark suite uses: the event loop, progress lines, report files, the machine's
description, Charter server processes, and the CPU and memory of processes (from /proc)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_loop(coroutine: Any) -> Any:
    """Run `coroutine` on uvloop when it is installed (as the servers run), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def raise_nofile() -> None:
    """1,000 SSE connections need more descriptors than a default soft limit of 1,024."""
    with contextlib.suppress(Exception):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def warmup_for(seconds: float) -> float:
    """The warm-up before each measured window of `seconds`."""
    return min(2.0, max(0.5, seconds / 5))


def latency_summary(samples: list[float]) -> dict[str, float] | None:
    """p50/p95/p99/max in milliseconds of per-operation seconds."""
    if not samples:
        return None
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

    return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": round(ordered[-1] * 1000, 3)}


# -- CPU and memory of processes ------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (None when it cannot be read)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        with contextlib.suppress(Exception):
            import psutil

            times = psutil.Process(pid).cpu_times()
            return times.user + times.system
    return None


def tree_cpu_seconds(root: int | None) -> float | None:
    """CPU seconds of a process, its reaped children and its live children (PostgreSQL's postmaster and
    its backends); None where /proc cannot tell."""
    if root is None:
        return None
    try:
        fields = Path(f"/proc/{root}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or entry.name == str(root):
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                child = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(child[1]) == root:
                    ticks += int(child[11]) + int(child[12])
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    times = os.times()
    return times.user + times.system


def machine_cpu() -> tuple[float, float] | None:
    """(busy, idle) CPU seconds of the whole machine since boot, from /proc/stat (None elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = [int(v) for v in fields[:8]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / hz, idle / hz


def machine_busy() -> float | None:
    """Busy CPU seconds of the whole machine since boot (None where /proc/stat is not there)."""
    found = machine_cpu()
    return None if found is None else found[0]


def machine_idle() -> float | None:
    found = machine_cpu()
    return None if found is None else found[1]


class Cores:
    """Cores used over a window, from start() (or construction) to read(), by whatever each named reader
    counts in CPU seconds (a process, a process tree, the machine); None where a reader cannot tell."""

    def __init__(self, readers: dict[str, Callable[[], float | None]], digits: int = 3) -> None:
        self.readers, self.digits = readers, digits
        self.start()

    def start(self) -> None:
        self.started = time.monotonic()
        self.before = {name: read() for name, read in self.readers.items()}

    def read(self) -> dict[str, float | None]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        out: dict[str, float | None] = {}
        for name, read in self.readers.items():
            now, then = read(), self.before[name]
            out[name] = None if now is None or then is None else round((now - then) / elapsed, self.digits)
        return out

    def known(self) -> dict[str, float]:
        """read() without the readers that could not tell."""
        return {name: value for name, value in self.read().items() if value is not None}


def bench_cores() -> Cores:
    """This process (all threads) and the whole machine, busy and idle: what a Meter records per window."""
    return Cores(
        {"process_cores": own_cpu_seconds, "machine_busy_cores": machine_busy, "machine_idle_cores": machine_idle}, digits=2
    )


def process_cores(pids: dict[str, int | None], trees: dict[str, int | None] | None = None) -> Cores:
    """Cores used by named processes, by named process trees (PostgreSQL's postmaster and its backends)
    and by the whole machine (`machine`); processes without a pid are left out."""
    readers: dict[str, Callable[[], float | None]] = {name: partial(cpu_seconds, pid) for name, pid in pids.items() if pid}
    readers.update({name: partial(tree_cpu_seconds, pid) for name, pid in (trees or {}).items() if pid})
    readers["machine"] = machine_busy
    return Cores(readers, digits=2)


def cores_with_other(found: dict[str, float]) -> dict[str, float]:
    """`found` (see process_cores) and `other`: what the machine used that none of the named processes did."""
    out = dict(found)
    if "machine" in out:
        out["other"] = round(max(0.0, out["machine"] - sum(v for k, v in out.items() if k != "machine")), 2)
    return out


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process in KiB, from /proc (psutil when /proc is not there)."""
    try:
        out = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out["rss" if line.startswith("VmRSS") else "hwm"] = int(line.split()[1])
        return out
    except OSError:
        with contextlib.suppress(Exception):
            import psutil

            info = psutil.Process(pid).memory_info()
            return {"rss": info.rss // 1024}
    return {}


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc; none where /proc is not there)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry.name))
    return found


def tree_rss_kib(pid: int) -> dict[str, int]:
    """`rss_kib` summed over a process and its live children (a server's worker processes)."""
    out: dict[str, int] = {}
    for member in (pid, *children_of(pid)):
        for key, value in rss_kib(member).items():
            out[key] = out.get(key, 0) + value
    return out


# -- progress -------------------------------------------------------------------------------------------


def bench_progress(label_width: int = 28) -> Any:
    """The progress display every benchmark shows on stderr: phase, bar, elapsed time, status."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(f"{{task.description:<{label_width}}}"),
        BarColumn(bar_width=24),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
    )


class Meter:
    """The progress line of one phase: warm-up, then the measured window, with the rate of the last second."""

    def __init__(self, progress: Any, title: str, unit: str, warmup: float, seconds: float) -> None:
        self.progress, self.title, self.unit = progress, title, unit
        self.warmup, self.seconds = warmup, seconds
        self.task = progress.add_task(title, total=warmup + seconds, status="starting")
        self.started = time.monotonic()
        self.history: deque[tuple[float, int]] = deque()
        self.measuring = False
        self.window: tuple[float, int] | None = None
        self.cores: Cores | None = None
        self.cpu: dict[str, float] = {}

    def restart_clock(self) -> None:
        self.started = time.monotonic()

    def tick(self, total: int) -> None:
        now = time.monotonic()
        self.history.append((now, total))
        while len(self.history) > 2 and now - self.history[0][0] > 1.0:
            self.history.popleft()
        then, before = self.history[0]
        rate = (total - before) / (now - then) if now > then else 0.0
        elapsed = now - self.started
        stage = (
            f"measuring {max(0.0, elapsed - self.warmup):4.1f}/{self.seconds:g}s"
            if self.measuring or self.window
            else f"warm-up {elapsed:3.1f}/{self.warmup:g}s"
        )
        self.progress.update(
            self.task,
            completed=min(elapsed, self.warmup + self.seconds),
            status=f"{stage}  {rate:>10,.0f} {self.unit}/s  ({total:,} done)",
        )

    def show_rate(self, elapsed: float, rate: float, measuring: bool) -> None:
        """For phases that report their own rate (pgbench's progress lines)."""
        stage = f"measuring {elapsed:4.1f}/{self.seconds:g}s" if measuring else f"warm-up {elapsed:3.1f}/{self.warmup:g}s"
        done = self.warmup + elapsed if measuring else elapsed
        self.progress.update(self.task, completed=min(done, self.warmup + self.seconds), status=f"{stage}  {rate:>10,.0f} {self.unit}/s")

    def begin(self, total: int) -> None:
        self.measuring = True
        self.window = (time.monotonic(), total)
        self.cores = bench_cores()

    def end(self, total: int) -> tuple[int, float]:
        """(operations, seconds) of the measured window; `cpu` then holds the cores used in it."""
        self.measuring = False
        assert self.window is not None and self.cores is not None
        self.cpu = self.cores.known()
        start, before = self.window
        return total - before, time.monotonic() - start

    def done(self, result: Any) -> None:
        """The phase's final line, from its result (`rate`, `seconds`, `operations`)."""
        self.progress.update(
            self.task,
            completed=self.warmup + self.seconds,
            status=f"[bold]{result.rate:,.0f} {self.unit}/s[/bold] over {result.seconds:.1f}s ({result.operations:,} {self.unit})",
        )


# -- report files ---------------------------------------------------------------------------------------


def write_report(folder: Path, suite: str, report: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> tuple[Path, Path]:
    """`<folder>/<suite>-<UTC time>.json` and `.md` (a numeric suffix when the name is taken)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = folder / f"{suite}-{stamp}"
    suffix = 1
    while base.with_suffix(".json").exists():
        suffix += 1
        base = folder / f"{suite}-{stamp}-{suffix}"
    json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(render(report))
    return json_path, md_path


def machine_info() -> dict[str, Any]:
    """The machine, the interpreter, the libraries measured and the commit, for a report."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(OSError, ValueError):
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    with contextlib.suppress(OSError):
        model = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if model:
            info["cpu_model"] = model.group(1).strip()
    with contextlib.suppress(Exception):
        import eventsourcing

        info["eventsourcing"] = getattr(eventsourcing, "__version__", None) or _dist_version("eventsourcing")
    with contextlib.suppress(Exception):
        import asyncpg

        info["asyncpg"] = asyncpg.__version__
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, cwd=ROOT, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5, cwd=ROOT
        ).stdout.strip()
        info["git_commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    return info


def _dist_version(name: str) -> str | None:
    from importlib.metadata import version

    with contextlib.suppress(Exception):
        return version(name)
    return None


# -- Charter server processes ---------------------------------------------------------------------------


def serve_app(app: Any, host: str, port: int, banner: str = "") -> None:
    """uvicorn on `app` as `charter serve` runs it, after a `<banner>http=... loop=...` line on stderr
    (the bench reads it back from the server's log)."""
    import uvicorn

    from interfaces.serving import server_config

    config = server_config(app, host, port)
    config.load()
    print(f"{banner}http={config.http_protocol_class.__name__} loop={config.loop}", file=sys.stderr, flush=True)
    uvicorn.Server(config).run()


@dataclass
class ServerProcess:
    """A Charter server a benchmark started as a subprocess, logging to `log`."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def spawn(cls, module: str, env: dict[str, str], port: int, log: Path, cwd: Path, **fields: Any) -> Any:
        """`python -m <module> serve` in `cwd` with `env`, its output appended to `log`."""
        cwd.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", module, "serve"],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        return cls(process=process, port=port, log=log, **fields)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (uvicorn's graceful shutdown); after `timeout` a stack dump (SIGQUIT), then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGQUIT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(2)
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def pythonpath(env: dict[str, str]) -> str:
    """PYTHONPATH for a server subprocess: this checkout first, then what `env` had."""
    return os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
