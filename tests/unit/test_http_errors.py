"""The error envelope's handlers without a server: a 500 the framework raises itself (a dependency that
fails its declared type) is answered as INTERNAL_ERROR and logged with its cause, as ours are."""

from __future__ import annotations

import io
import json
from typing import Protocol, runtime_checkable

from litestar import Litestar, get
from litestar.di import NamedDependency, Provide
from litestar.testing import TestClient

from infrastructure.telemetry.logging import configure_logging
from interfaces.http.errors import EXCEPTION_HANDLERS


@runtime_checkable
class Service(Protocol):
    def answer(self) -> str: ...


@get("/broken", dependencies={"service": Provide(lambda: None, sync_to_thread=False)})
async def broken(service: NamedDependency[Service]) -> str:  # the composition root handed over nothing
    return service.answer()


def test_a_framework_500_is_logged_with_its_cause() -> None:
    out = io.StringIO()
    configure_logging("info", json=True, file=out)
    try:
        with TestClient(Litestar([broken], exception_handlers=EXCEPTION_HANDLERS)) as client:
            response = client.get("/broken")
    finally:
        configure_logging("warning", json=True)

    assert response.status_code == 500 and response.json()["error"]["code"] == "INTERNAL_ERROR"
    [line] = [json.loads(text) for text in out.getvalue().splitlines() if '"unhandled error"' in text]
    assert line["level"] == "error" and line["path"] == "/broken" and line["status"] == 500
    assert "service" in line["exception"]  # the failing dependency is named in the logged traceback
