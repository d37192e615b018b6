"""Pieces every benchmark suite uses: CPU of process trees, PostgreSQL's postmaster, report files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg


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


async def postmaster_pid(dsn: str) -> int | None:
    """The postmaster's pid when PostgreSQL runs on this machine and /proc shows it (else None)."""
    try:
        conn = await asyncpg.connect(dsn)
        try:  # read while the backend lives: it exits with the connection
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            stat = Path(f"/proc/{backend}/stat").read_text()
        finally:
            await conn.close()
        if "postgres" not in stat.split(")", 1)[0]:
            return None
        return int(stat.rsplit(")", 1)[1].split()[1])
    except Exception:  # noqa: BLE001 - remote or hidden: not measured
        return None


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


@dataclass
class ServerProcess:
    """A Charter server a benchmark started as a subprocess, logging to `log`."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

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
