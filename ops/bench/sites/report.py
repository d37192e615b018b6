"""The ratio of `charter bench sites` against its target, its table and its Markdown report."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ops.bench.append.report import fmt_latency, fmt_ratio

TARGET = 0.5  # ActivateExtension/s over InstallPlugin/s


def ratio(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    install, activate = results["install"]["rate"], results["activate"]["rate"]
    value = activate / install if install > 0 else None
    return {"value": value, "target": TARGET, "met": value is not None and value >= TARGET}


def results_table(report: dict[str, Any]) -> Table:
    config = report["config"]
    table = Table(
        title=f"charter bench sites: {config['sites']} sites running {config['extensions']} extensions each, "
        f"{config['clients']} clients",
        title_justify="left",
    )
    for column in ("phase", "rate", "measured", "latency ms", "errors", "rounds"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for item in report["results"].values():
        table.add_row(
            item["name"], f"{item['rate']:,.1f} {item['unit']}/s", f"{item['operations']:,} in {item['seconds']:.1f}s",
            fmt_latency(item["latency_ms"]), str(item["errors"]), ", ".join(f"{r:,.1f}" for r in item["rounds"]),
        )
    found = report["ratio"]
    verdict = "[green]met[/green]" if found["met"] else "[red]NOT met[/red]"
    if report["results"]["activate"]["extra"].get("exhausted"):
        table.caption = "[red]a site ran out of spare plugins: rerun with more --spares[/red]\n"
    else:
        table.caption = ""
    table.caption += f"ActivateExtension / InstallPlugin: {fmt_ratio(found['value'])} (target >= {TARGET}x: {verdict})"
    return table


def markdown(report: dict[str, Any]) -> str:
    config, found = report["config"], report["ratio"]
    lines = [
        f"# charter bench sites — {report['started_at']}",
        "",
        f"{config['sites']} sites, each running {config['extensions']} active extensions; {config['clients']} concurrent "
        f"clients in both phases, {config['seconds']:g} s measured per phase after {config['warmup']:g} s warm-up, "
        f"best of {config['rounds']} rounds; same database, same runtime (PostgreSQL {report['server'].get('version')}, "
        f"{report['server']['kind']}). Setup took {config['setup_seconds']:.1f} s.",
        "",
        "| phase | rate | measured | latency (ms) | errors | every round | what |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for item in report["results"].values():
        lines.append(
            f"| {item['name']} | {item['rate']:,.1f} {item['unit']}/s | {item['operations']:,} in {item['seconds']:.1f} s "
            f"| {fmt_latency(item['latency_ms'])} | {item['errors']} | {', '.join(f'{r:,.1f}' for r in item['rounds'])} "
            f"| {item['title']} |"
        )
    lines += [
        "",
        f"ActivateExtension / InstallPlugin: **{fmt_ratio(found['value'])}** (target ≥ {TARGET:g}x: "
        f"{'met' if found['met'] else 'NOT met'}). Each site ran {config['extensions']} extensions when (b) began and "
        f"{report['results']['activate']['extra']['extensions_at_end']} at most when it ended (best round).",
    ]
    if report["results"]["activate"]["extra"].get("exhausted"):
        lines += ["", "**A site ran out of spare plugins before the window closed: rerun with more `--spares`.**"]
    errors = [f"- {i['name']}: {i['errors']} errors, first: `{i['first_error']}`" for i in report["results"].values() if i["first_error"]]
    if errors:
        lines += ["", "## Errors", "", *errors]
    lines += ["", "## Machine", "", *(f"- {k}: {v}" for k, v in report["machine"].items())]
    lines += ["", "## Run", "", *(f"- {k}: {v}" for k, v in config.items())]
    return "\n".join(lines) + "\n"
