"""Phases (1)-(3) of `charter bench fanout`: the writer, the server and the probe; idle SSE clients and the
server's memory per client; the load, its deliveries timed at the clients, and their summary."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from rich.progress import Progress

from ops.bench.common import Meter, latency_summary, process_cores, cores_with_other, rss_kib, tree_rss_kib
from ops.bench.fanout.clients import Auth, client_entry
from ops.bench.fanout.config import FanoutConfig, FanoutResult
from ops.bench.fanout.latency import Acks, hist_summary
from ops.bench.fanout.server import (
    hub_flushes,
    hub_window,
    http_get_json,
    msgspec_to_dict,
    profile_text,
    relay_behind,
    server_env,
    start_server,
    wait_for_stream,
    warm_connections,
)
from ops.bench.fanout.writer import writer_entry
from ops.bench.postgres import postmaster_pid


def _wait_messages(out: Any, kind: str, expected: int, timeout: float, alive: Any) -> dict[Any, Any]:
    """Collect `expected` ("kind", key, body) messages; raise on an ("error", ...) or a dead child."""
    import queue as queues

    found: dict[Any, Any] = {}
    deadline = time.monotonic() + timeout
    while len(found) < expected:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"waited {timeout:g}s for {expected - len(found)} '{kind}' messages")
        try:
            message = out.get(timeout=min(0.5, left))
        except queues.Empty:
            alive()
            continue
        if message[0] == "error":
            raise RuntimeError(f"bench process {message[1]} failed: {message[2]}")
        if message[0] == kind:
            found[message[1]] = message[2]
    return found


def run_fanout_phases(
    dsn: str, nats_url: str, stream: Any, cfg: FanoutConfig, workdir: Path, progress: Progress, nats_pid: int | None
) -> FanoutResult:
    import multiprocessing

    from cryptography.fernet import Fernet

    from infrastructure.embedded.process import find_free_port
    from infrastructure.settings import Settings

    result = FanoutResult()
    mp = multiprocessing.get_context("spawn")
    secret = Fernet.generate_key().decode()
    jwt_secret = uuid.uuid4().hex + uuid.uuid4().hex
    out = mp.Queue()
    stop = mp.Event()
    window = mp.Array("d", [math.inf, math.inf], lock=False)
    children: list[Any] = []
    server: Any = None

    def alive() -> None:
        for child in children:
            if child.exitcode not in (None, 0):
                raise RuntimeError(f"bench process {child.name} exited with {child.exitcode}")
        if server is not None and server.process.poll() is not None:
            raise RuntimeError(f"the Charter server exited with {server.process.returncode}:\n{server.log_tail()}")

    setup = progress.add_task("(1) setup", total=4, status="writer process: installing plugins")
    try:
        # The writer: its own runtime - the application write path. It is also the projector worker (as
        # production runs them beside the API replicas): the server's guard needs the access read model,
        # and the server itself stays an API replica without projectors. With --relay-in writer it runs
        # the relay too (and then, as every runtime with NATS does, an event hub nobody subscribes to).
        writer_settings = Settings.from_env(
            database_url=dsn,
            data_dir=workdir / "writer",
            secret_key=secret,
            log_level="warning",
            run_projectors=True,
            migrate_on_start=False,
        )
        # Only the writer's commands reach the clients: no checkpoints, no scheduled task runs (every
        # delivery in the window is then one the writer timed, from its acknowledgement too).
        writer_settings.audit_seal_interval, writer_settings.run_scheduler = 0.0, False
        writer_settings.run_relay = cfg.relay_in == "writer"
        writer_settings.nats_url = nats_url if cfg.relay_in == "writer" else None
        writer_settings.nats_stream = stream.name
        writer_settings.nats_subject_prefix = stream.prefix
        writer_settings.nats_max_age_days = 1.0
        committed = mp.Value("q", 0, lock=False)
        acks = Acks(mp)
        control = mp.Queue()
        writer = mp.Process(
            target=writer_entry, args=(writer_settings, cfg.plugins, cfg.rate, committed, control, out, acks), name="writer", daemon=True
        )
        writer.start()
        children.append(writer)
        _wait_messages(out, "ready", 1, 300, alive)
        progress.update(setup, advance=1, status=f"{cfg.plugins} plugins installed; starting the Charter server")

        port = find_free_port()
        env = server_env(dsn, nats_url, stream, port, cfg, secret, jwt_secret)
        server_settings = Settings.from_env(env)
        auth = Auth(jwt_secret, server_settings.jwt_issuer, server_settings.jwt_audience)
        result.server["settings"] = {
            k: v for k, v in msgspec_to_dict(server_settings).items()
            if k.startswith(("sse_", "pool_", "writers", "max_batch", "poll_", "run_", "nats_stream", "rate_limit"))
        }
        server = start_server(env, "127.0.0.1", port, workdir / "server.log", workdir / "server")
        asyncio.run(wait_for_stream(server, auth))
        deadline = time.monotonic() + 120
        while (behind := asyncio.run(relay_behind(dsn))) > 0:
            progress.update(setup, status=f"relay publishing the installs: {behind} to go")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server's relay is still {behind} events behind")
            alive()
            time.sleep(0.2)
        result.server["pid"] = server.pid
        result.server["workers"] = cfg.server_workers
        # With workers, the server is the supervisor and its worker processes: memory and CPU of all of them.
        server_rss = tree_rss_kib if cfg.server_workers > 1 else rss_kib
        server_tree = {"server": server.pid} if cfg.server_workers > 1 else {}
        server_alone = {} if cfg.server_workers > 1 else {"server": server.pid}
        with contextlib.suppress(Exception):
            result.server["http_impl"] = next(
                line.strip() for line in server.log.read_text().splitlines() if line.startswith("http=")
            )
        progress.update(setup, advance=1, status="server up, relay caught up; warming up the SSE route")
        asyncio.run(warm_connections(server, auth, 10))

        # The probe: one more SSE client and a core-NATS subscription, in a quiet process of its own.
        probe_connected, probe_failed, probe_frames = (mp.Value("i", 0, lock=False), mp.Value("i", 0, lock=False), mp.Value("q", 0, lock=False))
        probe = mp.Process(
            target=client_entry,
            args=("127.0.0.1", port, auth, 1, "probe", window, probe_connected, probe_failed, probe_frames, stop, out, None, nats_url, f"{stream.prefix}.>", acks),
            name="probe",
            daemon=True,
        )
        probe.start()
        children.append(probe)
        deadline = time.monotonic() + 60
        while probe_connected.value + probe_failed.value < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("the probe client did not connect")
            alive()
            time.sleep(0.05)
        if probe_failed.value:
            raise RuntimeError("the probe client could not connect")
        progress.update(setup, advance=1, status="idle before clients connect")
        time.sleep(2.0)
        before = server_rss(server.pid)
        progress.update(setup, advance=1, status=f"server RSS before clients: {before.get('rss', 0) / 1024:,.1f} MiB")

        # (2) idle clients, connected in two steps (half, then all): RSS is read after each, as the
        # median of several samples, so the per-client figure does not hinge on one reading.
        shares = [cfg.clients // cfg.client_processes + (1 if i < cfg.clients % cfg.client_processes else 0) for i in range(cfg.client_processes)]
        connected = [mp.Value("i", 0, lock=False) for _ in shares]
        failed = [mp.Value("i", 0, lock=False) for _ in shares]
        frames = [mp.Value("q", 0, lock=False) for _ in shares]
        allowed = mp.Value("d", 0.5, lock=False)
        clients = []
        for i, share in enumerate(shares):
            proc = mp.Process(
                target=client_entry,
                args=("127.0.0.1", port, auth, share, i, window, connected[i], failed[i], frames[i], stop, out, allowed, None, None, acks),
                name=f"clients-{i}",
                daemon=True,
            )
            proc.start()
            clients.append(proc)
            children.append(proc)
        connecting = progress.add_task("(2) connect SSE clients", total=cfg.clients, status="")
        postgres_pid = asyncio.run(postmaster_pid(dsn))
        started = time.monotonic()
        steps: list[dict[str, Any]] = []
        idle_cpu = process_cores({**server_alone, "writer": writer.pid}, {**server_tree, "postgres": postgres_pid})
        for fraction in (0.5, 1.0):
            allowed.value = fraction
            goal = sum(min(share, math.ceil(share * fraction - 1e-9)) for share in shares)
            while (done := sum(c.value for c in connected)) + sum(f.value for f in failed) < goal:
                progress.update(connecting, completed=done, status=f"{done:,}/{cfg.clients:,} connected")
                if time.monotonic() - started > 300:
                    raise TimeoutError(f"only {done} of {cfg.clients} SSE clients connected in 300 s")
                alive()
                time.sleep(0.1)
            progress.update(connecting, completed=done, status=f"{done:,} connected; idle {cfg.idle_seconds:g}s")
            if fraction == 1.0:
                connect_seconds = time.monotonic() - started
                idle_cpu.start()
            time.sleep(cfg.idle_seconds)
            samples = []
            for _ in range(5):
                samples.append(server_rss(server.pid).get("rss", 0))
                time.sleep(0.2)
            steps.append({"clients": sum(c.value for c in connected), "rss_kib": sorted(samples)[len(samples) // 2], "samples": samples})
        n_connected = steps[-1]["clients"]
        rss_before = before.get("rss", 0)
        delta = steps[-1]["rss_kib"] - rss_before
        per_client = delta / n_connected if n_connected else None
        marginal_clients = steps[-1]["clients"] - steps[0]["clients"]
        marginal = (steps[-1]["rss_kib"] - steps[0]["rss_kib"]) / marginal_clients if marginal_clients > 0 else None
        result.memory = {
            "server_rss_before_kib": rss_before,
            "server_rss_idle_clients_kib": steps[-1]["rss_kib"],
            "idle_clients": n_connected,
            "failed_clients": sum(f.value for f in failed),
            "connect_seconds": round(connect_seconds, 2),
            "idle_seconds": cfg.idle_seconds,
            "delta_kib": delta,
            "kib_per_idle_client": round(per_client, 2) if per_client is not None else None,
            "kib_per_idle_client_marginal": round(marginal, 2) if marginal is not None else None,
            "steps": steps,
            "cpu_cores_while_idle": cores_with_other(idle_cpu.known()),
        }
        progress.update(
            connecting,
            completed=cfg.clients,
            status=f"{n_connected:,} idle clients: server RSS {rss_before / 1024:,.1f} -> {steps[-1]['rss_kib'] / 1024:,.1f} MiB"
            + (f" = {per_client:,.1f} KiB/client" if per_client is not None else "")
            + (f" (half -> all: {marginal:,.1f})" if marginal is not None else ""),
        )

        # (3) load: steady commands, deliveries timed at the clients.
        go_at = time.time() + 0.6
        window[0], window[1] = go_at + cfg.warmup, go_at + cfg.warmup + cfg.seconds
        time.sleep(0.3)  # the client processes pick the window up every 0.1 s
        pids = {**server_alone, "writer": writer.pid, "probe": probe.pid, "nats_server": nats_pid}
        pids.update({f"clients_{i}": c.pid for i, c in enumerate(clients)})
        cpu = process_cores(pids, {**server_tree, "postgres": postgres_pid})
        control.put(("go", go_at, window[1]))
        writes = Meter(progress, "(3) commands -> log", "events", cfg.warmup, cfg.seconds)
        deliveries = Meter(progress, "(3) SSE deliveries", "deliveries", cfg.warmup, cfg.seconds)

        def delivered() -> int:
            return sum(f.value for f in frames)

        time.sleep(max(0.0, go_at - time.time()))
        writes.restart_clock()
        deliveries.restart_clock()
        profiling = cfg.profile is not None
        lag_samples: list[int] = []
        next_lag = 0.0
        while time.time() < window[1]:
            if time.monotonic() >= next_lag:
                next_lag = time.monotonic() + 1.0
                with contextlib.suppress(Exception):
                    lag_samples.append(asyncio.run(relay_behind(dsn)))
            now = time.time()
            if not writes.measuring and writes.window is None and now >= window[0]:
                writes.begin(committed.value)
                deliveries.begin(delivered())
                cpu.start()
                hub_before = asyncio.run(hub_flushes(server.host, server.port))
                if profiling:
                    server.process.send_signal(signal.SIGUSR1)
            writes.tick(committed.value)
            deliveries.tick(delivered())
            alive()
            time.sleep(min(0.2, max(0.01, window[1] - time.time())))
        if writes.window is None:  # a window shorter than one tick
            writes.begin(committed.value)
            deliveries.begin(delivered())
            cpu.start()
            hub_before = asyncio.run(hub_flushes(server.host, server.port))
        cores = cores_with_other(cpu.known())
        hub_after = asyncio.run(hub_flushes(server.host, server.port))
        if profiling:
            server.process.send_signal(signal.SIGUSR2)
        written, write_seconds = writes.end(committed.value)
        deliveries.end(delivered())
        progress.update(writes.task, completed=cfg.warmup + cfg.seconds, status=f"[bold]{written / write_seconds:,.0f} events/s[/bold] committed in the window")

        # Drain: wait until the clients stop receiving (or a deadline).
        draining = progress.add_task("(3) drain", total=None, status="")
        writer_done = _wait_messages(out, "done", 1, 60, alive)["writer"]
        last, quiet_since, drain_start = -1, time.monotonic(), time.monotonic()
        while time.monotonic() - quiet_since < 1.0 and time.monotonic() - drain_start < 30:
            total = delivered()
            if total != last:
                last, quiet_since = total, time.monotonic()
            progress.update(draining, status=f"{total:,} deliveries so far")
            time.sleep(0.1)
        after_load = server_rss(server.pid)
        result.server["ready_after_load"] = asyncio.run(http_get_json(server.host, server.port, "/ready"))
        result.server["relay_lag_in_window"] = {
            "samples": len(lag_samples), "max": max(lag_samples, default=None), "last": lag_samples[-1] if lag_samples else None,
        }
        stop.set()
        reports = _wait_messages(out, "done", len(clients) + 1, 60, alive)
        progress.update(draining, total=1, completed=1, status=f"done after {time.monotonic() - drain_start:.1f}s")

        committed_in_window = asyncio.run(events_recorded_between(dsn, window[0], window[1]))
        result.load = summarize_load(cfg, reports, writer_done, cores, window[0], window[1], committed_in_window)
        result.load["hub"] = hub_window(hub_before, hub_after, result.load["clients"] + 1, cfg.server_workers)
        result.memory["server_rss_after_load_kib"] = after_load.get("rss")
        result.memory["server_rss_peak_kib"] = after_load.get("hwm")
        progress.update(
            deliveries.task,
            completed=cfg.warmup + cfg.seconds,
            status=f"[bold]{result.load['deliveries_per_s']:,.0f} deliveries/s[/bold], p99 "
            f"{(result.load['latency_ms'] or {}).get('p99', float('nan')):,.1f} ms",
        )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            control.put(("stop", 0, 0))
        if server is not None:
            stopping = time.monotonic()
            result.server["exit_code"] = server.stop()
            result.server["shutdown_seconds"] = round(time.monotonic() - stopping, 2)
            result.server["log_tail"] = server.log_tail(40)
            result.server["warnings"] = server.warnings()
        for child in children:
            child.join(timeout=20)
            if child.is_alive():
                child.terminate()
                child.join(timeout=5)
    if cfg.profile is not None and cfg.profile.exists():
        result.profile_top = profile_text(cfg.profile)
    return result


async def events_recorded_between(dsn: str, low: float, high: float) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM events WHERE recorded_at >= to_timestamp($1) AND recorded_at < to_timestamp($2)", low, high
        )
    finally:
        await conn.close()


def summarize_load(
    cfg: FanoutConfig, reports: dict[Any, Any], writer: dict[str, Any], cores: dict[str, float], low: float, high: float,
    committed: int,
) -> dict[str, Any]:
    probe = reports.pop("probe")
    buckets: dict[int, int] = {}
    ack_buckets: dict[int, int] = {}
    max_ack = 0.0
    per_client: list[int] = []
    window_seqs: set[int] = set(probe["window_seqs"])
    totals = {
        "drops": 0, "disconnects": 0, "gaps": 0, "duplicates": 0, "negative": 0, "connections": 0, "chunks": 0, "frames": 0,
        "event_bytes": 0,
    }
    max_latency = 0.0
    for report in reports.values():
        for bucket, n in report["hist"].items():
            buckets[bucket] = buckets.get(bucket, 0) + n
        for bucket, n in report["ack_hist"].items():
            ack_buckets[bucket] = ack_buckets.get(bucket, 0) + n
        max_ack = max(max_ack, report["max_ack_latency"])
        per_client.extend(report["per_client_window"])
        window_seqs.update(report["window_seqs"])
        max_latency = max(max_latency, report["max_latency"])
        for key in totals:
            totals[key] += report[key]
    spans: dict[int, list[float]] = {}
    for report in reports.values():
        for seq, (first, last) in report["spread"].items():
            span = spans.setdefault(int(seq), [first, last])
            span[0], span[1] = min(span[0], first), max(span[1], last)
    spread = sorted(last - first for first, last in spans.values())

    def spread_at(q: float) -> float:
        return round(spread[min(len(spread) - 1, int(q * len(spread)))] * 1000, 2)

    seconds = high - low
    events = len(window_seqs)
    delivered = sum(per_client)
    expected = max(events, committed) * totals["connections"]
    # CPU per delivery: cores over the window / all frames received per second (warm-up and drain frames
    # included in neither, so this is approximate).
    frames_per_s = delivered / seconds if seconds > 0 else 0.0
    chunks_per_s = frames_per_s * totals["chunks"] / totals["frames"] if totals["frames"] else 0.0
    ordered = sorted(per_client)

    client_cores = {k: v for k, v in cores.items() if k.startswith("clients_")}

    def rate(n: float) -> float:
        return round(n / seconds, 2) if seconds > 0 else 0.0

    return {
        "window_seconds": round(seconds, 3),
        "commands": {
            "rate_requested": cfg.rate,
            "issued": writer["issued"],
            "completed": writer["completed"],
            "errors": writer["errors"],
            "first_error": writer["first_error"],
            "busy_skips": writer["busy_skips"],
            "max_in_flight": writer["max_in_flight"],
            "rate_achieved": round(writer["completed"] / writer["seconds"], 1) if writer["seconds"] else 0.0,
            "latency_ms": latency_summary(writer["latencies"]),
        },
        "events_in_window": events,
        "events_committed_in_window": committed,
        "events_never_delivered": max(0, committed - events),
        "events_per_s": rate(committed),
        "clients": totals["connections"],
        "deliveries": delivered,
        "expected_deliveries": expected,
        "missing_deliveries": expected - delivered,
        "deliveries_per_s": rate(delivered),
        "per_client_events_per_s": {
            "mean": rate(delivered / len(per_client)) if per_client else 0.0,
            "min": rate(ordered[0]) if ordered else 0.0,
            "p50": rate(ordered[len(ordered) // 2]) if ordered else 0.0,
            "max": rate(ordered[-1]) if ordered else 0.0,
        },
        "drops": totals["drops"],
        "disconnects": totals["disconnects"],
        "gaps": totals["gaps"],
        "duplicates": totals["duplicates"],
        "negative_latencies": totals["negative"],
        "latency_ms": hist_summary(buckets, max_latency),
        # The same deliveries timed from when the writer had the command's result (after its commit):
        # recorded_at is taken before the group commit, so the truth lies between the two.
        "latency_from_ack_ms": hist_summary(ack_buckets, max_ack),
        # One event, first client to last client: how long a flush to every client takes (the p99 floor).
        "fanout_spread_ms": {"p50": spread_at(0.5), "p99": spread_at(0.99), "max": round(spread[-1] * 1000, 2)} if spread else None,
        "probe": {k: probe[k] for k in ("frames", "drops", "disconnects", "gaps", "duplicates", "chunks")},
        "stages_ms": {
            "command_execute": latency_summary(writer["latencies"]),
            "recorded_to_jetstream": hist_summary(probe["nats_hist"] or {}, probe["nats_max"]),
            "recorded_to_probe_sse": hist_summary(probe["hist"], probe["max_latency"]),
        },
        "cpu_cores": cores,
        "events_per_chunk": round(totals["frames"] / totals["chunks"], 2) if totals["chunks"] else None,
        "bytes_per_chunk": round(totals["event_bytes"] / totals["chunks"]) if totals["chunks"] else None,
        "server_us_per_delivery": round(cores.get("server", 0.0) / frames_per_s * 1e6, 2) if frames_per_s else None,
        "server_us_per_chunk": round(cores.get("server", 0.0) / chunks_per_s * 1e6, 2) if chunks_per_s else None,
        "clients_us_per_chunk": round(sum(client_cores.values()) / chunks_per_s * 1e6, 2) if chunks_per_s else None,
        "clients_us_per_delivery": round(sum(client_cores.values()) / frames_per_s * 1e6, 2) if frames_per_s else None,
        "client_processes": len(reports),
        "client_side_saturated": any(v >= 0.9 for v in client_cores.values()),
        "server_saturated": cores.get("server", 0.0) >= 0.9,
    }
