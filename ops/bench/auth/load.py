"""(3) The load of `charter bench auth`: phases alternating A and B (the clients and the summaries are
ops/bench/http_load.py's)."""

from __future__ import annotations

from rich.progress import Progress

from ops.bench.auth import PATH
from ops.bench.auth.server import AuthServer
from ops.bench.http_load import PhaseResult, request_bytes, run_phase as _run_phase, side_summary

__all__ = ["PhaseResult", "run_load", "run_phase", "side_summary"]


async def run_phase(
    server: AuthServer, side: str, round_: int, request: bytes, clients: int, warmup: float, seconds: float,
    progress: Progress, pg_pid: int | None,
) -> PhaseResult:
    letter = "A" if side == "authorized" else "B"
    title = f"{letter}{round_} {side}" if round_ else f"warm-up {letter} (discarded)"
    return await _run_phase(
        server.port, [server.pid], side, round_, title, [request], clients, warmup, seconds, progress, pg_pid
    )


async def run_load(
    a: AuthServer, b: AuthServer, token: str, clients: int, warmup: float, seconds: float, rounds: int,
    progress: Progress, pg_pid: int | None,
) -> list[PhaseResult]:
    def request(server: AuthServer, token_: str | None) -> bytes:
        return request_bytes(server.port, PATH, token_, "charter-bench-auth")

    results = []
    # Both servers warm up once before the first measured phase (first connections of the database pools,
    # prepared statements, the interpreter's specialisation): not counted.
    for server, side, token_ in ((a, "authorized", token), (b, "unauthorized", None)):
        await run_phase(server, side, 0, request(server, token_), clients, warmup / 2, warmup, progress, pg_pid)
    for round_ in range(1, rounds + 1):
        results.append(await run_phase(a, "authorized", round_, request(a, token), clients, warmup, seconds, progress, pg_pid))
        results.append(await run_phase(b, "unauthorized", round_, request(b, None), clients, warmup, seconds, progress, pg_pid))
    return results
