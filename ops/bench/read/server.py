"""The servers of `charter bench read`: `python -m ops.bench.read.server serve` runs Charter or the bare
hello-JSON app (CHARTER_BENCH_READ_APP) with CHARTER_BENCH_READ_WORKERS worker processes, through the
serving code `charter serve` uses."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ops.bench.read import APP_ENV, BODIES_ENV, PROFILE_ENV, WORKERS_ENV

HELLO_FACTORY = "ops.bench.read.server:hello_app"


def hello_app() -> Any:
    """A bare Litestar app answering the list page and a plugin's detail, decoded once from the file the
    bench wrote: Litestar encodes them per request as it would any handler's return value."""
    from litestar import Litestar, get

    bodies = json.loads(Path(os.environ[BODIES_ENV]).read_text())
    page, detail = bodies["list"], bodies["detail"]

    @get("/api/v1/plugins")
    async def list_plugins(limit: int = 20) -> dict[str, Any]:
        return page

    @get("/api/v1/plugins/{plugin_id:str}")
    async def get_plugin(plugin_id: str) -> dict[str, Any]:
        return detail

    @get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar([list_plugins, get_plugin, health], debug=False)


def serve() -> None:
    from infrastructure.settings import Settings
    from interfaces.serving import APP_FACTORY, run_workers

    settings = Settings.from_env()
    workers = int(os.environ.get(WORKERS_ENV) or 1)
    charter = os.environ.get(APP_ENV, "charter") == "charter"
    print(f"app={'charter' if charter else 'hello'} workers={workers}", file=sys.stderr, flush=True)
    if workers > 1:
        run_workers(APP_FACTORY if charter else HELLO_FACTORY, settings.host, settings.port, workers)
        return
    from interfaces.app import create_app
    from ops.bench.common import serve_app

    app = create_app(settings) if charter else hello_app()
    profile = os.environ.get(PROFILE_ENV)
    if not (charter and profile):
        serve_app(app, settings.host, settings.port)
        return
    import cProfile
    import signal

    def stop(*_: object) -> None:  # uvicorn raises SIGTERM again once it has shut down: end here, profile saved
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        serve_app(app, settings.host, settings.port)
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        print("usage: python -m ops.bench.read.server serve", file=sys.stderr)
        sys.exit(2)
