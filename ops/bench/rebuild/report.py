"""The ratios of `charter bench rebuild` against the raw-scan floor, its tables and its Markdown report."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ops.bench.append.report import fmt_ratio

REPLAY_TARGET = 0.4  # a rebuild's events/s over the raw scan's
LAG_TARGET_MS = 1000.0  # live projection lag p99 under append load


def ratios(replays: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    floor = replays["raw_scan"]["rate"]
    out = {}
    for key, replay in replays.items():
        if key != "raw_scan":
            value = replay["rate"] / floor if floor > 0 else None
            out[key] = {"value": value, "target": REPLAY_TARGET, "met": value is not None and value >= REPLAY_TARGET}
    return out


def lag_verdicts(lag: dict[str, Any]) -> dict[str, bool]:
    return {name: bool(found) and found["p99"] <= LAG_TARGET_MS for name, found in lag["lag_ms"].items()}


def replay_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"charter bench rebuild: {report['config']['events_in_log']:,} events", title_justify="left")
    for column, justify in (("phase", "left"), ("events/s", "right"), ("measured", "right"), ("vs raw scan", "right"), ("", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for key, replay in report["replays"].items():
        ratio = report["ratios"].get(key)
        verdict = "" if ratio is None else ("[green]met[/green]" if ratio["met"] else "[red]not met[/red]")
        table.add_row(
            replay["name"],
            f"{replay['rate']:,.0f}",
            f"{replay['events']:,} in {replay['seconds']:.2f}s",
            "1.00x (floor)" if ratio is None else fmt_ratio(ratio["value"]),
            verdict + (f" (>= {REPLAY_TARGET}x)" if ratio else ""),
        )
    return table


def lag_table(lag: dict[str, Any]) -> Table:
    table = Table(
        title=f"live projection lag under append load ({lag['append_rate']:,.0f} events/s, {lag['clients']} clients)",
        title_justify="left",
    )
    for column in ("projection", "samples", "p50 ms", "p95 ms", "p99 ms", "max ms", ""):
        table.add_column(column, justify="left" if column in ("projection", "") else "right")
    verdicts = lag_verdicts(lag)
    for name, found in lag["lag_ms"].items():
        if not found:
            table.add_row(name, "0", "-", "-", "-", "-", "[red]no samples[/red]")
            continue
        verdict = "[green]met[/green]" if verdicts[name] else "[red]not met[/red]"
        table.add_row(name, str(lag["samples"][name]), *(f"{found[k]:,.1f}" for k in ("p50", "p95", "p99", "max")),
                      f"{verdict} (p99 <= {LAG_TARGET_MS:g})")  # fmt: skip
    return table


def markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    lines = [
        f"# charter bench rebuild — {report['started_at']}",
        "",
        f"{config['events_in_log']:,} events in the log ({', '.join(f'{k}: {v:,}' for k, v in config['stream_types'].items())}), "
        f"rebuild chunks of {config['chunk']:,} events, PostgreSQL {report['server'].get('version')} ({report['server']['kind']}).",
        "",
        "| phase | events/s | measured | vs raw scan | target | how |",
        "|---|---:|---:|---:|---|---|",
    ]
    for key, replay in report["replays"].items():
        ratio = report["ratios"].get(key)
        shown = "1.00x (floor)" if ratio is None else fmt_ratio(ratio["value"])
        target = "" if ratio is None else f"≥ {REPLAY_TARGET}x: {'met' if ratio['met'] else 'NOT met'}"
        lines.append(
            f"| {replay['name']} | {replay['rate']:,.0f} | {replay['events']:,} in {replay['seconds']:.2f} s | {shown} | {target} | {replay['method']} |"
        )
    lag = report.get("lag")
    if lag:
        verdicts = lag_verdicts(lag)
        lines += [
            "",
            f"Live projection lag under append load: {lag['append_rate']:,.0f} InstallPlugin events/s from {lag['clients']} "
            f"clients for {lag['seconds']:.1f} s, projectors in the same process.",
            "",
            "| projection | samples | p50 ms | p95 ms | p99 ms | max ms | target |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, found in lag["lag_ms"].items():
            cells = " | ".join(f"{found[k]:,.1f}" for k in ("p50", "p95", "p99", "max")) if found else "- | - | - | -"
            met = "met" if verdicts[name] else "NOT met"
            lines.append(f"| {name} | {lag['samples'][name]} | {cells} | p99 ≤ {LAG_TARGET_MS:g} ms: {met} |")
    machine, server = report["machine"], report["server"]
    lines += ["", "## Machine", "", *(f"- {k}: {v}" for k, v in machine.items())]
    lines += ["", "## PostgreSQL", "", *(f"- {k}: {v}" for k, v in server.get("settings", {}).items())]
    lines += ["", "## Run", "", *(f"- {k}: {v}" for k, v in config.items())]
    return "\n".join(lines) + "\n"
