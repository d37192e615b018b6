"""The table and the Markdown report of `charter bench read`."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _lat(latency: dict[str, float] | None) -> str:
    return "-" if not latency else f"p50 {latency['p50']:.2f} / p99 {latency['p99']:.2f}"


def _rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key, side in report["sides"].items():
        app, path, n = key.split(":")
        ratio = report["ratios"].get(f"{path}:{n}", {}).get("ratio") if app == "charter" else None
        per = side["cpu_per_request"]
        rows.append([
            path, n, "Charter (viewer token)" if app == "charter" else "bare Litestar", f"{side['rate']:,.0f}",
            " / ".join(f"{r:,.0f}" for r in side["phase_rates"]), _lat(side["latency_ms"]), str(side["errors"]),
            f"{side['cpu_cores']['server']} / {side['cpu_cores']['clients']}",
            f"{per['server_us']} / {per['postgres_us']}", "" if ratio is None else f"{ratio:.3f}x",
        ])
    return rows


HEADERS = ["path", "N", "server", "requests/s", "per phase", "latency ms", "errors", "cores: server / clients",
           "CPU µs per request: server / postgres", "Charter / bare"]


def results_table(report: dict[str, Any]) -> Table:
    table = Table(title="charter bench read", title_justify="left")
    for name in HEADERS:
        table.add_column(name, justify="left" if name in ("path", "server") else "right")
    for row in _rows(report):
        table.add_row(*row)
    return table


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"# charter bench read — {report['started_at']}",
        "",
        f"{cfg['clients']} keep-alive connections; list `{cfg['paths']['list']}`, detail `{cfg['paths']['detail']}`; "
        f"{cfg['plugins']} plugins; per path and worker count, phases Charter / bare Litestar alternated {cfg['rounds']} "
        f"times, {cfg['seconds']:g} s measured after {cfg['warmup']:g} s warm-up each ({report['server']['kind']} PostgreSQL).",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    lines.append("")
    for path, t in report["targets"]["by_path"].items():
        lines.append(f"- {path}, one worker: Charter / bare = **{t['ratio']}x**, p99 {t['p99_ms']} ms "
                     f"(target ≥ {report['targets']['ratio']}x and p99 ≤ {report['targets']['p99_ms']:g} ms: "
                     f"{'met' if t['met'] else 'NOT met'})")
    for path, s in report["scaling"].items():
        lines.append(f"- {path}: Charter with {s['workers']} workers / 1 worker = **{s['ratio']}x**")
    lines += ["", f"Machine: {report['machine'].get('cpu_count')} CPUs, {report['machine'].get('cpu_model', '?')}; "
              f"commit {report['machine'].get('git_commit', '?')}.", ""]
    return "\n".join(lines)
