"""The ratios of `charter bench append` against its targets, its tables and its Markdown report."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ops.bench.append.phase import PhaseResult
from ops.bench.append.telemetry import describe_floor, telemetry_ratio

CEILING_TARGET = 1.0  # Charter events/s over one-row INSERT transactions/s
STOCK_TARGET = 10.0  # Charter events/s over eventsourcing's stock recorder events/s
RATIO_NAMES = {
    "charter_vs_ceiling": "Charter / PostgreSQL ceiling",
    "charter_vs_eventsourcing": "Charter / eventsourcing stock",
    "telemetry_on_vs_off": "Charter with telemetry / without",
}


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def ratios(results: dict[str, PhaseResult]) -> dict[str, dict[str, Any]]:
    charter = results["charter"].rate
    out = {}
    for key, base, target in (
        ("charter_vs_ceiling", "postgres_ceiling", CEILING_TARGET),
        ("charter_vs_eventsourcing", "eventsourcing_stock", STOCK_TARGET),
    ):
        value = ratio(charter, results[base].rate)
        out[key] = {"value": value, "target": target, "met": value is not None and value >= target}
    telemetry = telemetry_ratio(results)
    if telemetry is not None:
        out["telemetry_on_vs_off"] = telemetry
    return out


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_latency(latency: dict[str, float] | None) -> str:
    if not latency:
        return "-"
    if "p50" in latency:
        return f"p50 {latency['p50']:.2f} / p99 {latency['p99']:.2f}"
    return f"avg {latency.get('avg') or 0:.2f}"


def fmt_cpu(cpu: dict[str, float] | None) -> str:
    """`bench process / whole machine` cores busy during the window."""
    if not cpu:
        return "-"
    process = f"{cpu['process_cores']:.2f}" if "process_cores" in cpu else "-"
    machine = f"{cpu['machine_busy_cores']:.2f}" if "machine_busy_cores" in cpu else "?"
    return f"{process} / {machine}"


def results_table(results: dict[str, PhaseResult]) -> Table:
    table = Table(title="charter bench append", title_justify="left")
    table.add_column("phase")
    table.add_column("rate", justify="right")
    table.add_column("measured", justify="right")
    table.add_column("latency ms", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("CPU cores", justify="right")
    for result in results.values():
        table.add_row(
            result.name,
            f"{result.rate:,.0f} {result.unit}/s",
            f"{result.operations:,} in {result.seconds:.1f}s",
            fmt_latency(result.latency_ms),
            str(result.errors),
            fmt_cpu(result.cpu),
        )
    return table


def ratios_table(found: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="targets", title_justify="left")
    table.add_column("ratio")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    names = RATIO_NAMES
    for key, item in found.items():
        verdict = "[green]met[/green]" if item["met"] else "[red]not met[/red]"
        table.add_row(names[key], fmt_ratio(item["value"]), f">= {item['target']:g}x", verdict)
    return table


def markdown(report: dict[str, Any]) -> str:
    res = report["results"]
    lines = [
        f"# charter bench append — {report['started_at']}",
        "",
        f"{report['config']['clients']} concurrent clients, {report['config']['seconds']:g} s measured per phase after "
        f"{report['config']['warmup']:g} s warm-up, all phases on the same PostgreSQL server ({report['server']['kind']}).",
        "",
        "| phase | rate | measured | latency (ms) | errors | CPU cores: bench process / machine | how |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for item in res.values():
        lines.append(
            f"| {item['name']}: {item['title']} | {item['rate']:,.0f} {item['unit']}/s | {item['operations']:,} in {item['seconds']:.1f} s "
            f"| {fmt_latency(item['latency_ms'])} | {item['errors']} | {fmt_cpu(item['cpu'])} | {item['method']} |"
        )
    charter = res["charter"]["extra"]
    lines += [
        "",
        f"CPU cores: busy during the measured window, the bench process (all its threads) / the whole machine "
        f"({report['machine'].get('cpu_count')} CPUs, so other load on the machine shows up here too); pgbench runs "
        "in a process of its own.",
        "",
        f"Charter commands per commit transaction: {charter.get('commands_per_transaction')} over the whole run, "
        f"{charter.get('commands_per_transaction_window')} in the measured window "
        f"({charter.get('events_in_log')} events in {charter.get('transactions')} transactions).",
        "",
        "| ratio | value | target | |",
        "|---|---:|---:|---|",
    ]
    names = RATIO_NAMES
    for key, item in report["ratios"].items():
        lines.append(f"| {names[key]} | {fmt_ratio(item['value'])} | ≥ {item['target']:g}x | {'met' if item['met'] else 'NOT met'} |")
    floor = res.get("charter_telemetry", {}).get("extra", {}).get("floor")
    if floor:
        spans = res["charter_telemetry"]["extra"]["otlp_sink"].get("by_name", {})
        lines += ["", "## Telemetry against the SDK's floor", "", describe_floor(floor), "",
                  "Spans received: " + ", ".join(f"{name} {n:,}" for name, n in spans.items())]
    errors = [f"- {item['title']}: {item['errors']} errors, first: `{item['first_error']}`" for item in res.values() if item["first_error"]]
    if errors:
        lines += ["", "## Errors", "", *errors]
    machine, server = report["machine"], report["server"]
    lines += ["", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", "## PostgreSQL", "", f"- server: {server['kind']}", f"- version: {server.get('version_full') or server.get('version')}"]
    lines += [f"- {k}: {v}" for k, v in server.get("settings", {}).items()]
    lines += ["", "## Run", ""]
    lines += [f"- {k}: {v}" for k, v in report["config"].items()]
    return "\n".join(lines) + "\n"
