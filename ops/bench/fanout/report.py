"""The targets of `charter bench fanout`, its tables, its Markdown report and the plain statements read
off the numbers."""

from __future__ import annotations

import signal
from typing import Any

from rich.table import Table

from ops.bench.fanout.config import (
    KIB_PER_CLIENT_TARGET,
    P99_TARGET_MS,
    RELAY_RATIO_TARGET,
    TARGET_CLIENTS,
    TARGET_RATE,
    FanoutConfig,
    FanoutResult,
)


def targets(cfg: FanoutConfig, fan: FanoutResult, relay: dict[str, Any]) -> dict[str, dict[str, Any]]:
    load = fan.load
    p99 = (load.get("latency_ms") or {}).get("p99")
    achieved = load.get("commands", {}).get("rate_achieved", 0.0)
    clean = not load.get("drops") and not load.get("disconnects") and not load.get("missing_deliveries")
    at_target = cfg.clients >= TARGET_CLIENTS and cfg.rate >= TARGET_RATE
    kib = fan.memory.get("kib_per_idle_client")
    ratio = relay.get("relay_vs_raw")
    return {
        "p99_commit_to_client_ms": {
            "title": f"p99 commit-to-client at {TARGET_RATE:g} events/s with {TARGET_CLIENTS:,} clients",
            "value": p99,
            "target": f"<= {P99_TARGET_MS:g} ms",
            "met": p99 is not None and p99 <= P99_TARGET_MS and clean and achieved >= 0.95 * cfg.rate,
            "conditions": f"{load.get('clients', 0):,} clients, {achieved:,.0f} of {cfg.rate:g} events/s requested; "
            f"timed from recorded_at (before the commit); from the writer's acknowledgement p99 "
            f"{(load.get('latency_from_ack_ms') or {}).get('p99', float('nan')):,.1f} ms"
            + ("" if at_target else " (below the target load)")
            + ("" if clean else f"; {load.get('drops', 0)} drops, {load.get('disconnects', 0)} disconnects, {load.get('missing_deliveries', 0)} missing"),
        },
        "kib_per_idle_client": {
            "title": "server memory per idle SSE client",
            "value": kib,
            "target": f"<= {KIB_PER_CLIENT_TARGET:g} KiB",
            "met": kib is not None and kib <= KIB_PER_CLIENT_TARGET,
            "conditions": f"{fan.memory.get('idle_clients', 0):,} idle clients",
        },
        "relay_vs_raw": {
            "title": "relay events/s / raw publish_async loop events/s",
            "value": ratio,
            "target": f">= {RELAY_RATIO_TARGET:g}x",
            "met": ratio is not None and ratio >= RELAY_RATIO_TARGET,
            "conditions": f"{relay.get('events', 0):,} events, best of {relay.get('rounds', 0)}",
        },
    }


def fmt_value(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key == "relay_vs_raw":
        return f"{value:.2f}x"
    if key == "kib_per_idle_client":
        return f"{value:,.1f} KiB"
    return f"{value:,.1f} ms"


def fmt_hub(hub: dict[str, Any] | None) -> str:
    if not hub:
        return "-"
    return (
        f"{hub['flushes']:,} flushes of {hub['events_per_flush']:,.1f} events, {hub['flush_ms_avg']:,.1f} ms each, "
        f"{hub['us_per_write']:,.1f} µs per client write"
    )


def fmt_floor(floor: dict[str, Any] | None) -> str:
    if not floor:
        return "-"
    return (
        f"{floor['us_per_write_wall']:,.1f} µs per write ({floor['us_per_write_cpu']:,.1f} µs CPU) of {floor['chunk_bytes']:,} B; "
        f"{floor['pass_ms_p50']:,.1f} ms per pass over {floor['clients']:,} sockets (p50 of {floor['passes']})"
    )


def fmt_lat(lat: dict[str, float] | None) -> str:
    if not lat:
        return "-"
    parts = [f"p50 {lat['p50']:,.1f}"]
    if "p90" in lat:
        parts.append(f"p90 {lat['p90']:,.1f}")
    parts += [f"p99 {lat['p99']:,.1f}", f"max {lat['max']:,.1f}"]
    return " / ".join(parts)


def results_tables(report: dict[str, Any]) -> list[Table]:
    load, memory, relay = report["fanout"], report["memory"], report["relay"]
    main = Table(title="charter bench fanout", title_justify="left")
    main.add_column("measure")
    main.add_column("value", justify="right")
    cmds = load["commands"]
    main.add_row("commands (RestartPlugin) committed", f"{cmds['rate_achieved']:,.0f}/s of {cmds['rate_requested']:g}/s requested ({cmds['errors']} errors)")
    main.add_row("server worker processes", str(report["config"].get("server_workers", 1)))
    main.add_row("SSE clients", f"{load['clients']:,} in {load['client_processes']} client process(es) (+1 probe)")
    main.add_row(
        "events committed in the window",
        f"{load['events_committed_in_window']:,} in {load['window_seconds']:.1f}s ({load['events_per_s']:,.0f}/s); "
        f"{load['events_never_delivered']:,} reached no client",
    )
    lag = report["server_process"].get("relay_lag_in_window") or {}
    main.add_row("relay", f"in the {report['config']['relay_in']} process; lag in the window max {lag.get('max')}, last {lag.get('last')} events")
    main.add_row("deliveries", f"{load['deliveries']:,} of {load['expected_deliveries']:,} = {load['deliveries_per_s']:,.0f}/s")
    per = load["per_client_events_per_s"]
    main.add_row("per client events/s", f"mean {per['mean']:,.1f}, min {per['min']:,.1f}, max {per['max']:,.1f}")
    main.add_row("drops / disconnects / gaps / dups", f"{load['drops']} / {load['disconnects']} / {load['gaps']} / {load['duplicates']}")
    main.add_row(
        "events per chunk; CPU per delivery",
        f"{load['events_per_chunk']}; server {load['server_us_per_delivery']} us, clients {load['clients_us_per_delivery']} us",
    )
    main.add_row("commit-to-client ms (all clients)", fmt_lat(load["latency_ms"]))
    main.add_row("  from the writer's acknowledgement, ms", fmt_lat(load.get("latency_from_ack_ms")))
    main.add_row("  first -> last client, per event, ms", fmt_lat(load.get("fanout_spread_ms")))
    hub, floor = load.get("hub"), report.get("floor")
    if hub:
        main.add_row(
            "hub flushes in the window",
            f"{hub['flushes']:,} of {hub['events_per_flush']:,.1f} events, {hub['flush_ms_avg']:,.1f} ms each = "
            f"{hub['us_per_write']:,.1f} µs per client write",
        )
    if floor:
        main.add_row(
            "floor: bare uvloop writes, no load",
            f"{floor['us_per_write_wall']:,.1f} µs per write of {floor['chunk_bytes']:,} B, {floor['pass_ms_p50']:,.1f} ms per "
            f"pass over {floor['clients']:,} sockets",
        )
    stages = load["stages_ms"]
    main.add_row("  command execute (writer) ms", fmt_lat(stages["command_execute"]))
    main.add_row("  recorded_at -> JetStream (probe) ms", fmt_lat(stages["recorded_to_jetstream"]))
    main.add_row("  recorded_at -> 1 SSE client (probe) ms", fmt_lat(stages["recorded_to_probe_sse"]))
    cores = load["cpu_cores"]
    main.add_row("CPU cores in window", ", ".join(f"{k} {v:.2f}" for k, v in cores.items()) + f" (of {report['machine'].get('cpu_count')})")
    idle = memory.get("cpu_cores_while_idle") or {}
    main.add_row("CPU cores, clients idle", ", ".join(f"{k} {v:.2f}" for k, v in idle.items()))
    main.add_row(
        "server RSS",
        f"{(memory.get('server_rss_before_kib') or 0) / 1024:,.1f} MiB -> {(memory.get('server_rss_idle_clients_kib') or 0) / 1024:,.1f} MiB "
        f"with {memory.get('idle_clients', 0):,} idle clients; after load {(memory.get('server_rss_after_load_kib') or 0) / 1024:,.1f} MiB",
    )
    for key, title in (
        ("raw", "raw publish_async"), ("raw_stall", "raw, wait_stall=5"), ("raw_barrier", "raw, acks per 1,000"),
        ("raw_batched", "raw, stall + acks per 1,000"), ("relay", "Relay"),
    ):
        if key in relay["best"]:
            main.add_row(f"relay phase: {title}", f"{relay['best'][key]:,.0f} events/s")
    goals = Table(title="targets", title_justify="left")
    goals.add_column("target")
    goals.add_column("value", justify="right")
    goals.add_column("goal", justify="right")
    goals.add_column("")
    goals.add_column("conditions")
    for key, item in report["targets"].items():
        goals.add_row(item["title"], fmt_value(key, item["value"]), item["target"], "[green]met[/green]" if item["met"] else "[red]not met[/red]", item["conditions"])
    return [main, goals]


def markdown(report: dict[str, Any]) -> str:
    cfg, load, memory, relay = report["config"], report["fanout"], report["memory"], report["relay"]
    cmds, stages, per = load["commands"], load["stages_ms"], load["per_client_events_per_s"]
    lag = report["server_process"].get("relay_lag_in_window") or {}
    lines = [
        f"# charter bench fanout — {report['started_at']}",
        "",
        f"One Charter server ({cfg.get('server_workers', 1)} worker process(es); uvicorn, {report['server_process'].get('http_impl', '?')}), "
        f"{load['clients']:,} SSE clients in "
        f"{load['client_processes']} client process(es) plus one probe client, RestartPlugin commands from a separate writer "
        f"process at {cfg['rate']:g}/s for {cfg['warmup']:g} s warm-up + {cfg['seconds']:g} s measured; PostgreSQL "
        f"{report['servers']['postgres']['kind']}, NATS {report['servers']['nats']['kind']}.",
        "",
        "## Targets",
        "",
        "| target | value | goal | | conditions |",
        "|---|---:|---:|---|---|",
    ]
    for key, item in report["targets"].items():
        lines.append(f"| {item['title']} | {fmt_value(key, item['value'])} | {item['target']} | {'met' if item['met'] else 'NOT met'} | {item['conditions']} |")
    lines += [
        "",
        "## Fan-out under load",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| commands committed (warm-up + window) | {cmds['completed']:,} ({cmds['rate_achieved']:,.0f}/s of {cmds['rate_requested']:g}/s; {cmds['errors']} errors, {cmds['busy_skips']} skipped) |",
        f"| events committed in the measured window | {load['events_committed_in_window']:,} ({load['events_per_s']:,.0f}/s) |",
        f"| … of which reached no client by the end of the drain | {load['events_never_delivered']:,} |",
        f"| relay | in the {cfg['relay_in']} process; lag during the window max {lag.get('max')}, last {lag.get('last')} events |",
        f"| deliveries (all clients) | {load['deliveries']:,} of {load['expected_deliveries']:,} ({load['deliveries_per_s']:,.0f}/s) |",
        f"| events/s per client | mean {per['mean']:,.1f}, min {per['min']:,.1f}, p50 {per['p50']:,.1f}, max {per['max']:,.1f} |",
        f"| drops / disconnects / gaps / duplicates | {load['drops']} / {load['disconnects']} / {load['gaps']} / {load['duplicates']} |",
        f"| events per chunk (batching of the hub's flushes, as received) | {load['events_per_chunk']} |",
        f"| CPU per delivery: server / clients (µs) | {load['server_us_per_delivery']} / {load['clients_us_per_delivery']} |",
        f"| commit-to-client latency, all clients (ms) | {fmt_lat(load['latency_ms'])} |",
        f"| — the same, timed from when the writer had the command's result (ms) | {fmt_lat(load.get('latency_from_ack_ms'))} |",
        f"| — one event from its first to its last client (the time one flush takes, ms) | {fmt_lat(load.get('fanout_spread_ms'))} |",
        f"| — command execute in the writer (ms) | {fmt_lat(stages['command_execute'])} |",
        f"| — recorded_at → JetStream, core-NATS probe (ms) | {fmt_lat(stages['recorded_to_jetstream'])} |",
        f"| — recorded_at → one SSE client in a quiet process (ms) | {fmt_lat(stages['recorded_to_probe_sse'])} |",
        f"| CPU cores in the window | {', '.join(f'{k} {v:.2f}' for k, v in load['cpu_cores'].items())} (machine has {report['machine'].get('cpu_count')}) |",
        f"| client side saturated (a client process ≥ 0.9 core) | {load['client_side_saturated']} |",
        f"| server process saturated (≥ 0.9 core) | {load['server_saturated']} |",
        f"| hub flushes in the window (from /metrics) | {fmt_hub(load.get('hub'))} |",
        f"| floor: bare uvloop server, same chunk to as many sockets, nothing else running | {fmt_floor(report.get('floor'))} |",
        "",
        "Latency = client receive time (`time.time()` when the bytes were read) − the event's `recorded_at`, on one "
        "machine clock. `recorded_at` is the domain event's timestamp, taken in the writer process when the command "
        "handler triggers the event — after the plugin's stream was loaded, before the append is queued for the "
        "group commit — so these numbers include the commit itself (see the command execute line), i.e. they slightly "
        "overstate commit-to-client. Only events recorded inside the measured window count; their deliveries are "
        "waited for after the window closes.",
        "",
        "## Memory",
        "",
        f"- server RSS before clients (after 10 warm-up SSE connections were opened and closed, and the probe connected): {memory.get('server_rss_before_kib'):,} KiB",
        f"- with {memory.get('idle_clients', 0):,} idle clients after {memory.get('idle_seconds')} s: {memory.get('server_rss_idle_clients_kib'):,} KiB "
        f"(+{memory.get('delta_kib'):,} KiB = **{memory.get('kib_per_idle_client')} KiB per client**); connecting took {memory.get('connect_seconds')} s",
        f"- marginal cost between {memory['steps'][0]['clients']:,} and {memory['steps'][-1]['clients']:,} idle clients: "
        f"{memory.get('kib_per_idle_client_marginal')} KiB per client (RSS = median of 5 samples at each step: {[st['rss_kib'] for st in memory['steps']]} KiB)",
        f"- after the load: {memory.get('server_rss_after_load_kib')} KiB (peak {memory.get('server_rss_peak_kib')} KiB; the peak "
        "includes start-up, e.g. argon2's 64 MiB working memory for the dummy password hash)",
        f"- CPU cores while the clients were idle: {memory.get('cpu_cores_while_idle')}",
        "- every client presents its own access token (role auditor, everywhere), so the server's token cache holds "
        "one entry per client, as it would in production",
        "",
        "## Relay vs raw JetStream publish",
        "",
        f"{relay['events']:,} events appended in big batches ({relay['append_events_per_s']:,.0f} events/s), then published to "
        f"fresh streams of the same NATS server, best of {relay['rounds']} rounds. Payload {relay['payload_bytes_avg']:.0f} B, "
        f"headers ~{relay['header_bytes_avg']:.0f} B per message (Nats-Msg-Id, expected-last-msg-id chain, traceparent, Charter-*).",
        "",
        "| publisher | events/s | runs (events/s) |",
        "|---|---:|---|",
    ]
    titles = {
        "raw": "raw `publish_async` loop, acks awaited at the end (baseline)",
        "raw_stall": "raw, `wait_stall=5` as the relay passes",
        "raw_barrier": "raw, acks awaited every 1,000 (the relay's batch barrier), no `wait_stall`",
        "raw_batched": "raw, `wait_stall=5`, acks awaited every 1,000 (the relay's batch barrier)",
        "relay": "Relay (reads and publishes batches of 1,000 while earlier ones wait for acks; checkpoint after acks)",
    }
    for key, title in titles.items():
        runs = relay["runs"].get(key) or []
        each = ", ".join(f"{r['events_per_s']:,.0f}" for r in runs)
        lines.append(f"| {title} | {relay['best'].get(key, 0):,.0f} | {each} |")
    best_relay = max(relay["runs"]["relay"], key=lambda r: r["events_per_s"])
    lines += [
        "",
        f"Relay time split (best run): {best_relay['seconds']:.3f} s steady, of which {best_relay['publish_seconds']:.3f} s in `_publish` "
        f"(publish_async calls) and {best_relay['read_and_checkpoint_seconds']:.3f} s reading the log or waiting for acks; "
        f"startup (connect, lock, stream, resync) {best_relay['startup_seconds']:.3f} s, not counted. In isolation: read_global "
        f"{relay['read_global_events_per_s']:,.0f} events/s, envelope+headers encoding {relay['encode_events_per_s']:,.0f} events/s.",
        "",
    ]
    if report.get("analysis"):
        lines += ["## Analysis", "", *report["analysis"], ""]
    lines += ["## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in report["machine"].items()]
    lines += ["", "## Servers", ""]
    pg = report["servers"]["postgres"]
    lines += [f"- PostgreSQL ({pg['kind']}): {pg.get('version_full') or pg.get('version')}"]
    nats_info = report["servers"]["nats"]
    lines += [f"- NATS ({nats_info['kind']}): {nats_info.get('version')}"]
    lines += [f"- Charter server settings: {report['server_process'].get('settings')}"]
    lines += ["", "## Run", ""]
    lines += [f"- {k}: {v}" for k, v in cfg.items()]
    if report.get("profile_top"):
        lines += ["", "## Server profile (cProfile, measured window)", "", "```", report["profile_top"].strip(), "```"]
    return "\n".join(lines) + "\n"


def analysis(report: dict[str, Any]) -> list[str]:
    """Plain statements read off the numbers (where time and memory go), for the report."""
    load, relay, cfg = report["fanout"], report["relay"], report["config"]
    notes = []
    lag = report["server_process"].get("relay_lag_in_window") or {}
    committed = load.get("events_committed_in_window") or 0
    if committed and (load.get("events_never_delivered", 0) > 0.05 * committed or (lag.get("max") or 0) > cfg["rate"]):
        notes.append(
            f"- The relay fell behind: {load['events_never_delivered']:,} of {committed:,} events committed in the window reached "
            f"no client by the end of the drain; relay lag peaked at {lag.get('max')} events (relay in the {cfg['relay_in']} process)."
        )
    stages = load["stages_ms"]
    js, probe, all_ = stages.get("recorded_to_jetstream"), stages.get("recorded_to_probe_sse"), load.get("latency_ms")
    if js and probe and all_:
        notes.append(
            f"- p99 by stage: JetStream {js['p99']:,.1f} ms, one quiet SSE client {probe['p99']:,.1f} ms, all clients {all_['p99']:,.1f} ms: "
            f"relay ≈ {js['p99']:,.1f} ms, hub + SSE for one client ≈ {probe['p99'] - js['p99']:,.1f} ms, the rest "
            f"({all_['p99'] - probe['p99']:,.1f} ms) is the cost of serving {load['clients']:,} clients (server and client CPU)."
        )
    cores = load["cpu_cores"]
    if load.get("server_us_per_chunk"):
        per_chunk = load["server_us_per_chunk"]
        cycle_ms = per_chunk * load["clients"] / 1000
        notes.append(
            f"- The server spends ≈ {per_chunk:,.0f} µs of CPU per chunk written to one client ({load.get('events_per_chunk')} events per "
            f"chunk), so one hub flush to {load['clients']:,} clients costs ≈ {cycle_ms:,.0f} ms of event-loop time: the last client of "
            "a flush gets it that much later than the first, and the relay (same loop) waits behind it."
        )
    floor, hub = report.get("floor"), load.get("hub")
    if floor and hub:
        notes.append(
            f"- Floor: a bare uvloop server writing one {floor['chunk_bytes']:,}-byte chunk to each of {floor['clients']:,} sockets "
            f"takes {floor['us_per_write_wall']:,.1f} µs per write ({floor['pass_ms_p50']:,.1f} ms per pass) on this machine with "
            f"nothing else running; Charter's hub took {hub['us_per_write']:,.1f} µs per write in the window "
            f"({hub['flush_ms_avg']:,.1f} ms per flush of {hub['events_per_flush']:,.1f} events, with the load running)."
        )
    if load.get("server_saturated"):
        notes.append(f"- The server process used {cores.get('server', 0):.2f} cores: its one event loop is saturated.")
    if load.get("client_side_saturated"):
        notes.append("- A client process used ≥ 0.9 core: client-side queueing is part of the measured latency.")
    machine = cores.get("machine")
    cpus = report["machine"].get("cpu_count") or 0
    if machine is not None and cpus and machine >= 0.9 * cpus:
        notes.append(
            f"- The machine was busy {machine:.2f} of {cpus} cores (other processes: {cores.get('other', 0):.2f}): server, clients, "
            "writer, PostgreSQL and NATS compete for CPU."
        )
    server = report["server_process"]
    if server.get("exit_code") == -signal.SIGKILL:
        notes.append(
            f"- The server did not stop within 15 s of SIGTERM and was killed (shutdown {server.get('shutdown_seconds')} s); "
            "its asyncio tasks at that moment are in server_process.log_tail of the JSON report."
        )
    best = relay.get("best", {})
    if best.get("raw") and best.get("relay"):
        notes.append(
            f"- Relay {best['relay']:,.0f} events/s vs raw {best['raw']:,.0f}; raw with wait_stall=5 {best.get('raw_stall', 0):,.0f}; "
            f"raw with the per-1,000 ack barrier {best.get('raw_barrier', 0):,.0f}, with both {best.get('raw_batched', 0):,.0f}. "
            "wait_stall costs a Task and a loop iteration per message (asyncio.wait_for on Python 3.11)."
        )
    return notes
