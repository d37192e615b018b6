"""`charter bench tasks`: each phase against its floor (the idle loop's p99) and its targets, as ratios;
the tables and the Markdown report."""

from __future__ import annotations

from typing import Any

from rich.table import Table

P99_TARGET_MS = 100.0
CORES_TARGET = 0.2
SUSTAINED_SHARE = 0.95  # of the offered runs started within the window


def verdicts(phase: dict[str, Any], floor_p99: float | None) -> dict[str, Any]:
    """p99 against the target and the floor, cores against the target (ratios: target / measured >= 1 is met)."""
    p99 = (phase["lateness_ms"] or {}).get("p99")
    cores = phase["cores"]
    return {
        "p99_ms": p99, "p99_over_floor": round(p99 / floor_p99, 1) if p99 is not None and floor_p99 else None,
        "p99_target_ratio": round(P99_TARGET_MS / p99, 2) if p99 else None,
        "p99_met": p99 is not None and p99 <= P99_TARGET_MS,
        "cores": cores, "cores_target_ratio": round(CORES_TARGET / cores, 2) if cores else None,
        "cores_met": cores is not None and cores <= CORES_TARGET,
        "sustained": phase.get("started_share", 1.0) >= SUSTAINED_SHARE,
    }


def largest_sustained(full: list[dict[str, Any]]) -> int | None:
    held = [p["tasks"] for p in full if p["verdict"]["sustained"]]
    return max(held) if held else None


def _rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    idle = report["idle"]
    rows = [("(0) idle loop (floor)", "-", _lat(idle), "1.0x", "-", f"{idle['cores']:.3f}", "-")]
    phases = [("(a) scheduler, recorder", report["scheduler"])] + [(f"(b) full path", p) for p in report["full_path"]]
    for name, p in phases:
        v = p["verdict"]
        rows.append((
            name, f"{p['tasks']:,}/s -> {p['started_per_s']:,.0f}/s ({p['started_share']:.0%})", _lat(p),
            "-" if v["p99_over_floor"] is None else f"{v['p99_over_floor']:.1f}x",
            _ratio(v["p99_target_ratio"], v["p99_met"]), f"{p['cores']:.3f}", _ratio(v["cores_target_ratio"], v["cores_met"]),
        ))
    return rows


def _lat(p: dict[str, Any]) -> str:
    lat = p["lateness_ms"]
    return "-" if not lat else f"p50 {lat['p50']:.2f} / p99 {lat['p99']:.2f}"


def _ratio(value: float | None, met: bool) -> str:
    return "-" if value is None else f"{value:.2f}x {'met' if met else 'NOT met'}"


HEADER = ("phase", "runs offered -> started", "tick-to-start ms", "p99 vs floor", "p99 target 100 ms",
          "cores", "cores target 0.2")


def table(report: dict[str, Any]) -> Table:
    out = Table(title=f"charter bench tasks ({report['config']['seconds']:g} s windows)", title_justify="left")
    for column in HEADER:
        out.add_column(column)
    for row in _rows(report):
        out.add_row(*row)
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# charter bench tasks — {report['started_at']}", "",
             f"Machine: {report['machine'].get('cpu_count')} CPUs; PostgreSQL {report['server'].get('version')}; "
             f"windows of {report['config']['seconds']:g} s after {report['config']['warmup']:g} s of warm-up.", "",
             "(a) replaces the port that starts runs with an in-process recorder: it isolates the scheduler's own "
             "cost; (b) records every run in PostgreSQL (3 events, 2 appends per run).", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    lines += ["", f"Largest full-path size sustained: {report['largest_sustained'] or 'none'} runs/s", ""]
    return "\n".join(lines)
