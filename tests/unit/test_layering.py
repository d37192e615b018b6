"""Dependencies point inward: domain/ and application/ import no framework, driver or outer layer.

Every import is found with `ast` (top-level or inside a function, absolute or relative, and
`importlib.import_module("...")` / `__import__("...")` with a literal name), so a lazy import does
not slip past the check.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

IO_LIBRARIES = {
    "litestar", "asyncpg", "nats", "structlog", "opentelemetry", "prometheus_client", "authlib", "psycopg",
    "psycopg2", "httpx", "uvicorn", "aiohttp", "requests", "urllib3", "sqlalchemy", "redis", "starlette",
    "fastapi", "uvloop", "socket", "ssl", "subprocess", "sqlite3", "http.client", "http.server", "urllib.request",
    "eventsourcing.postgres",
    "eventsourcing.sqlite", "eventsourcing.persistence", "eventsourcing.application", "eventsourcing.system",
}
OUTER_LAYERS = {"application", "infrastructure", "interfaces", "projections"}

FORBIDDEN = {
    "domain": IO_LIBRARIES | OUTER_LAYERS,
    "application": IO_LIBRARIES | (OUTER_LAYERS - {"application"}),
}


def package_of(path: Path) -> str:
    """Dotted package containing `path` (for resolving relative imports)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1])
    return ".".join(parts[:-1])


def resolve(package: str, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = package.split(".")
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, *([module] if module else [])])


def imported_modules(source: str, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = resolve(package, node.module, node.level)
            yield node.lineno, module
            for alias in node.names:  # `from eventsourcing import postgres` imports a submodule
                yield node.lineno, f"{module}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in {"import_module", "__import__"} and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def matches(module: str, forbidden: set[str]) -> str | None:
    for banned in forbidden:
        if module == banned or module.startswith(banned + "."):
            return banned
    return None


def violations(layer: str) -> list[str]:
    found = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for line, module in imported_modules(path.read_text(), package_of(path)):
            banned = matches(module, FORBIDDEN[layer])
            if banned:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({banned} is not allowed in {layer}/)")
    return found


@pytest.mark.parametrize("layer", ["domain", "application"])
def test_layer_has_python_files(layer: str) -> None:
    assert list((ROOT / layer).rglob("*.py")), f"no python files found under {layer}/"


def test_domain_imports_no_framework_driver_or_outer_layer() -> None:
    assert violations("domain") == []


def test_application_imports_no_infrastructure_interfaces_projections_or_io_library() -> None:
    assert violations("application") == []


LAYERS = ("domain", "application", "infrastructure", "interfaces", "projections")


def features() -> set[str]:
    """A feature is a folder of domain/ (plugins, identity, ...): the name every layer uses for it."""
    return {p.name for p in (ROOT / "domain").iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def imports_under(folder: str) -> Iterator[tuple[str, int, str, ast.AST]]:
    for path in sorted((ROOT / folder).rglob("*.py")):
        source = path.read_text()
        for line, module in imported_modules(source, package_of(path)):
            yield str(path.relative_to(ROOT)), line, module, path


def test_http_imports_no_infrastructure_but_telemetry_and_the_composition_root() -> None:
    """Controllers translate: what they need arrives as a dependency built by the composition root."""
    found = [
        f"{where}:{line} imports {module}"
        for where, line, module, _ in imports_under("interfaces/http")
        if matches(module, {"infrastructure"}) and not matches(module, {"infrastructure.telemetry"})
    ]
    assert found == []


def test_the_stream_imports_no_read_model() -> None:
    found = [f"{where}:{line} imports {module}" for where, line, module, _ in imports_under("infrastructure/stream")
             if matches(module, {"projections"})]
    assert found == []


def crossings(feature_names: set[str]) -> list[str]:
    """Imports from one feature's folder into another feature's folder that is not its domain's public face."""
    found = []
    for layer in LAYERS:
        for feature in feature_names:
            folder = Path(layer) / feature if layer != "interfaces" else Path("interfaces/http") / feature
            if not (ROOT / folder).exists():
                continue
            for where, line, module, _ in imports_under(str(folder)):
                parts = module.split(".")
                other = next((p for p in parts[1:] if p in feature_names), None)
                if parts[0] not in LAYERS or other is None or other == feature:
                    continue
                if parts[0] != "domain" or any(p.startswith("_") for p in parts):
                    found.append(f"{where}:{line} imports {module} (features meet through domain/{other}/ only)")
    return found


def test_features_meet_only_through_their_domain() -> None:
    assert features() >= {"plugins", "identity"}
    assert crossings(features()) == []


class TestTheCheckItself:
    """The check must see every form of import, or the tests above pass vacuously."""

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("import asyncpg", "asyncpg"),
            ("import opentelemetry.trace as t", "opentelemetry.trace"),
            ("from litestar import Litestar", "litestar"),
            ("def f():\n    import structlog\n", "structlog"),
            ("from ..infrastructure import eventstore", "infrastructure"),
            ("from . import eventstore", "domain.eventstore"),
            ("from eventsourcing import postgres", "eventsourcing.postgres"),
            ("import importlib\nimportlib.import_module('nats')", "nats"),
            ("__import__('httpx')", "httpx"),
        ],
    )
    def test_finds_the_import(self, source: str, expected: str) -> None:
        modules = {m for _, m in imported_modules(source, "domain")}

        assert expected in modules

    def test_flags_forbidden_modules_and_their_submodules(self) -> None:
        assert matches("opentelemetry.trace", FORBIDDEN["domain"]) == "opentelemetry"
        assert matches("infrastructure.eventlog.eventstore", FORBIDDEN["domain"]) == "infrastructure"
        assert matches("application.errors", FORBIDDEN["application"]) is None
        assert matches("eventsourcing.domain", FORBIDDEN["domain"]) is None
        assert matches("natsort", FORBIDDEN["domain"]) is None
