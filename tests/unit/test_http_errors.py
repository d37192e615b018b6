"""The error envelope's handlers without a server: a 500 the framework raises itself (a dependency that
fails its declared type) is answered as INTERNAL_ERROR and logged with its cause, as ours are; a read
model not yet in the shape the code reads (rebuilding after an upgrade) answers 503, not 500."""

from __future__ import annotations

import io
import json
from typing import Protocol, runtime_checkable

import asyncpg
import pytest
import structlog
from litestar import Litestar, get
from litestar.di import NamedDependency, Provide
from litestar.testing import TestClient

from infrastructure.telemetry.logging import configure_logging
from interfaces.http import errors
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


@get("/upgraded")
async def upgraded() -> str:  # what a query of a read model's new shape meets until its rebuild swaps in
    raise asyncpg.UndefinedColumnError('column p.manifest_seq does not exist')


def test_a_read_model_being_rebuilt_answers_503_with_retry_after_and_logs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    configure_logging("info", json=True, file=out)
    monkeypatch.setattr(errors, "log", structlog.get_logger(errors.__name__))  # not the one cached by an earlier test
    try:
        with TestClient(Litestar([upgraded], exception_handlers=EXCEPTION_HANDLERS)) as client:
            responses = [client.get("/upgraded") for _ in range(3)]
    finally:
        configure_logging("warning", json=True)

    for response in responses:
        assert response.status_code == 503 and response.headers["Retry-After"] == "2"
        assert response.json()["error"]["code"] == "READ_MODEL_NOT_READY"
    lines = [json.loads(text) for text in out.getvalue().splitlines()]
    assert [line["event"] for line in lines if line.get("level") in ("warning", "error")] == ["read model not ready"]
