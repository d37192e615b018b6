"""Which errors mean "the database is unavailable" (503) rather than a defect (500)."""

from __future__ import annotations

import time

import asyncpg
import pytest

from infrastructure.eventlog.availability import Outage, is_unavailable


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "reset"),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed"),
        asyncpg.InterfaceError("pool is closing"),
        asyncpg.exceptions._base.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    ],
)
def test_outage_shapes_are_unavailable(exc: BaseException) -> None:
    assert is_unavailable(exc)


def test_a_cause_or_a_group_member_counts() -> None:
    wrapped = RuntimeError("append failed")
    wrapped.__cause__ = ConnectionRefusedError()
    assert is_unavailable(wrapped)
    assert is_unavailable(ExceptionGroup("relay", [ValueError(), ConnectionResetError()]))


def test_a_cycle_of_causes_and_groups_ends() -> None:
    member = ValueError("held")
    group = ExceptionGroup("relay", [member])
    member.__context__ = group
    assert not is_unavailable(group)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.InterfaceError("the server expects 2 arguments, 1 was passed"),
        asyncpg.exceptions._base.InternalClientError("something else"),
    ],
)
def test_defects_are_not_outages(exc: BaseException) -> None:
    assert not is_unavailable(exc)


def test_an_outage_counts_failures_and_resets_when_it_ends() -> None:
    outage = Outage("test-db")
    outage.failed(ConnectionRefusedError(), "here")
    outage.failed(ConnectionRefusedError(), "there")
    assert outage.down and outage.failures == 2 and "ConnectionRefusedError" in outage.last_error
    outage.succeeded()
    assert not outage.down and outage.failures == 0 and outage.last_error is None


def test_a_success_that_began_before_the_outage_does_not_end_it() -> None:
    outage = Outage("test-db")
    began = time.monotonic()  # a statement already under way on a connection the server has not closed yet
    outage.failed(ConnectionRefusedError(), "here")
    outage.succeeded(began)
    assert outage.down, "an in-flight success proves nothing about recovery"
    outage.succeeded(time.monotonic())
    assert not outage.down


def test_a_failure_that_began_before_the_recovery_does_not_reopen_the_outage() -> None:
    outage = Outage("test-db")
    began = time.monotonic()
    outage.failed(ConnectionRefusedError(), "here")
    outage.succeeded(time.monotonic())
    outage.failed(ConnectionResetError(), "late news", began)
    assert not outage.down and outage.failures == 0
    outage.failed(ConnectionResetError(), "fresh", time.monotonic())
    assert outage.down


def test_a_success_begun_before_the_latest_failure_does_not_end_the_outage() -> None:
    outage = Outage("database")
    outage.failed(ConnectionRefusedError(), "request")
    time.sleep(0.001)
    began = time.monotonic()  # after the outage was noticed...
    time.sleep(0.001)
    outage.failed(ConnectionRefusedError(), "projection")  # ...but before this failure: the server is still going away
    outage.succeeded(began)  # a statement that was under way on a connection not yet closed
    assert outage.down
    outage.succeeded(time.monotonic())  # begun after every failure seen: the server answers again
    assert not outage.down
