"""The table and the Markdown report of `charter bench auth`."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ops.bench.auth import PATH


def fmt_latency(latency: dict[str, float] | None) -> str:
    return "-" if not latency else f"p50 {latency['p50']:.2f} / p99 {latency['p99']:.2f}"


def fmt_cores(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def side_title(key: str) -> str:
    return "A authorized (viewer token)" if key == "authorized" else "B authorization off (no token)"


def results_table(report: dict[str, Any]) -> Table:
    table = Table(title="charter bench auth: GET " + PATH, title_justify="left")
    for name, justify in (
        ("side", "left"), ("requests/s", "right"), ("per phase", "right"), ("latency ms", "right"), ("errors", "right"),
        ("cores: clients / server / postgres / machine", "right"), ("CPU µs per request: server / postgres", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for key, side in report["sides"].items():
        cpu, per = side["cpu_cores"], side["cpu_per_request"]
        table.add_row(
            side_title(key),
            f"{side['rate']:,.0f}",
            " / ".join(f"{r:,.0f}" for r in side["phase_rates"]),
            fmt_latency(side["latency_ms"]),
            str(side["errors"]),
            " / ".join(fmt_cores(cpu[k]) for k in ("clients", "server", "postgres", "machine_busy")),
            f"{per['server_us'] if per['server_us'] is not None else '?'} / {per['postgres_us'] if per['postgres_us'] is not None else '?'}",
        )
    return table


def markdown(report: dict[str, Any]) -> str:
    cfg, target = report["config"], report["target"]
    lines = [
        f"# charter bench auth — {report['started_at']}",
        "",
        f"`GET {PATH}` with {cfg['clients']} concurrent keep-alive connections, phases A, B, A, B of "
        f"{cfg['seconds']:g} s measured each after {cfg['warmup']:g} s warm-up, both servers on the same "
        f"PostgreSQL database ({report['server']['kind']}), {cfg['plugins']} plugins seeded.",
        "",
        "| side | requests/s | per phase | latency (ms) | errors | cores: clients / server / postgres / machine | CPU µs per request: server / postgres |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, side in report["sides"].items():
        cpu, per = side["cpu_cores"], side["cpu_per_request"]
        lines.append(
            f"| {side_title(key)} | {side['rate']:,.0f} | {' / '.join(f'{r:,.0f}' for r in side['phase_rates'])} "
            f"| {fmt_latency(side['latency_ms'])} | {side['errors']} "
            f"| {' / '.join(fmt_cores(cpu[k]) for k in ('clients', 'server', 'postgres', 'machine_busy'))} "
            f"| {per['server_us']} / {per['postgres_us']} |"
        )
    value = target["value"]
    lines += [
        "",
        f"Authorized / unauthorized: **{'n/a' if value is None else f'{value:.3f}x'}** (target ≥ {target['target']:g}x: "
        f"{'met' if target['met'] else 'NOT met'}). Server CPU per request, authorized − unauthorized: "
        f"{report['authorization_cost_us']} µs.",
        "",
        f"The guard alone (`authorize`, measured in the bench process, best of 3 runs of {report['guard']['calls']:,} calls): "
        f"{report['guard']['authorized_us']} µs per request with authorization and the viewer's token, "
        f"{report['guard']['disabled_us']} µs with authorization off: {report['guard']['extra_us']} µs more, against "
        f"{report['sides']['unauthorized']['cpu_per_request']['server_us']} µs of server CPU per request, so "
        f"≈ {report['expected_ratio_from_guard']}x expected from the guard alone.",
        "",
        f"Client side: at most {fmt_cores(report['client_cores_max'])} cores in a phase "
        f"({'not the bottleneck' if report['client_bound'] is False else 'may be the bottleneck' if report['client_bound'] else 'unknown'}); "
        f"the machine has {report['machine'].get('cpu_count')} CPUs.",
        "",
        f"Both servers answered the same page: {report['check']['same_body']} ({report['check']['body_bytes']} bytes, "
        f"total {report['check']['total']}); A refused a request without a token with 401.",
    ]
    errors = [f"- {k}: {s['errors']} errors, first: `{s['first_error']}`" for k, s in report["sides"].items() if s["first_error"]]
    if errors:
        lines += ["", "## Errors", "", *errors]
    lines += ["", "## Servers", ""]
    lines += [f"- {s['label']} ({s['role']}): {s.get('banner', '')}" for s in report["servers"]]
    lines += ["", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in report["machine"].items()]
    server = report["server"]
    lines += ["", "## PostgreSQL", "", f"- server: {server['kind']}", f"- version: {server.get('version_full') or server.get('version')}"]
    lines += [f"- {k}: {v}" for k, v in server.get("settings", {}).items()]
    lines += ["", "## Run", ""]
    lines += [f"- {k}: {v}" for k, v in cfg.items()]
    return "\n".join(lines) + "\n"
