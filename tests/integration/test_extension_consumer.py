"""The extension consumer example (ops/examples/consume_events.py) against a real relay and JetStream.

Events are appended to a database of the test's own; the relay publishes them to a JetStream stream of
the test's own; the example's `consume()` reads them with a durable pull consumer and explicit acks.
These tests hold the example to what its documentation promises: every event once, acked; a restart
with the same durable resumes after the last acked event; what is not acked comes back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import uuid4

import nats
import pytest

from application.ports import AppendRequest, NewEvent
from infrastructure.eventlog.eventstore import GENESIS, EventStore, create_pool
from infrastructure.stream.relay import Relay, StreamSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "ops" / "examples" / "consume_events.py"
SMALL_STREAM = 64 * 1024**2  # JetStream reserves max_bytes per stream; the default 8 GiB exhausts a test server
TIMEOUT = 15.0


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("consume_events_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


example = load_example()


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting until {what}"
        await asyncio.sleep(0.05)


@dataclasses.dataclass
class Appended:
    event_id: str
    stream_id: str
    stream_type: str
    event_type: str
    position: int = 0


class World:
    """A database with a relay publishing it to a JetStream stream, and a way to append events."""

    def __init__(self, store: EventStore, relay: Relay, stream: StreamSettings, nats_url: str, js: Any) -> None:
        self.store, self.relay, self.stream, self.nats_url, self.js = store, relay, stream, nats_url, js
        self.appended: list[Appended] = []

    @property
    def subject(self) -> str:
        return f"{self.stream.prefix}.>"

    async def append(self, count: int, stream_type: str = "probe", site_id: str | None = None) -> list[Appended]:
        """`count` events, one command each (so the global order is the order of the calls)."""
        made = []
        for _ in range(count):
            stream_id = f"{stream_type}:{uuid4().hex[:12]}"
            event = NewEvent(
                event_id=uuid4(),
                stream_id=stream_id,
                stream_type=stream_type,
                stream_version=1,
                event_type="Probe.Happened",
                payload={"n": len(self.appended)},
                metadata={"actor": "extension-test"},
                recorded_at=datetime.now(timezone.utc),
                site_id=site_id,
            )
            result = await self.store.append(AppendRequest(stream_id, 0, [event], GENESIS))
            made.append(Appended(str(event.event_id), stream_id, stream_type, event.event_type, result.position))
        self.appended += made
        await eventually(lambda: self.relay.state.published >= len(self.appended), "the relay published everything")
        return made

    async def consume(self, durable: str, handle: Callable[[Any], Any], stop_after: int | None = None, **kw: Any) -> int:
        kw.setdefault("subject", self.subject)
        subject = kw.pop("subject")
        return await asyncio.wait_for(
            example.consume(self.nats_url, self.stream.name, subject, durable, handle, stop_after, **kw), TIMEOUT
        )

    async def consume_for(self, seconds: float, durable: str, handle: Callable[[Any], Any], **kw: Any) -> int:
        """Consume until `seconds` have passed (for "nothing more arrives")."""
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        return await self.consume(durable, handle, stop=stop, fetch_timeout=0.2, **kw)

    async def consumer(self, durable: str) -> Any:
        return await self.js.consumer_info(self.stream.name, durable)


@pytest.fixture
async def world(fresh_database_url: str, nats_url: str, stream_settings: StreamSettings) -> AsyncIterator[World]:
    stream = dataclasses.replace(stream_settings, max_bytes=SMALL_STREAM)
    pool = await create_pool(fresh_database_url, min_size=1, max_size=4)
    store = EventStore(pool, writers=1)
    await store.start()
    relay = Relay(fresh_database_url, nats_url, stream, poll_interval=0.02)
    task = asyncio.create_task(relay.run())
    nc = await nats.connect(nats_url)
    try:
        yield World(store, relay, stream, nats_url, nc.jetstream())
    finally:
        task.cancel()
        hung = []
        for name, step in [
            ("the relay task", asyncio.gather(task, return_exceptions=True)),
            ("relay.close()", relay.close()),
            ("the test's NATS connection", nc.close()),
            ("store.stop()", store.stop()),
            ("pool.close()", pool.close()),
        ]:
            try:
                await asyncio.wait_for(step, 5)
            except TimeoutError:
                hung.append(name)
        assert not hung, f"teardown steps did not finish within 5 s: {hung}"


def durable_name() -> str:
    return f"ext-{uuid4().hex[:10]}"


def assert_acked_everything(info: Any, last_seq: int) -> None:
    assert info.ack_floor.stream_seq == last_seq, info
    assert info.num_ack_pending == 0, info
    assert info.num_pending == 0, info


# -- tests --------------------------------------------------------------------------------------------


async def test_consume_receives_every_event_once_in_order_and_acks_it(world: World) -> None:
    appended = await world.append(12)
    durable = durable_name()
    got: list[Any] = []

    handled = await world.consume(durable, got.append, stop_after=12, batch=5)

    assert handled == 12
    assert [e.seq for e in got] == list(range(1, 13))
    assert [e.event_id for e in got] == [a.event_id for a in appended]
    assert [(e.event_type, e.stream_id, e.position) for e in got] == [
        (a.event_type, a.stream_id, a.position) for a in appended
    ]
    assert all(e.delivered == 1 for e in got)
    assert {"event_id", "position", "stream_id", "stream_type", "event_type", "payload", "metadata"} <= set(got[0].envelope)
    assert_acked_everything(await world.consumer(durable), 12)


async def test_an_async_handler_is_awaited_before_the_ack(world: World) -> None:
    await world.append(3)
    durable = durable_name()
    finished: list[int] = []

    async def handle(event: Any) -> None:
        await asyncio.sleep(0.01)
        info = await world.consumer(durable)
        assert info.ack_floor.stream_seq == event.seq - 1, "acked only after the handler returned"
        finished.append(event.seq)

    assert await world.consume(durable, handle, stop_after=3) == 3
    assert finished == [1, 2, 3]
    assert_acked_everything(await world.consumer(durable), 3)


async def test_a_restart_with_the_same_durable_resumes_after_the_last_acked_event(world: World) -> None:
    appended = await world.append(10)
    durable = durable_name()
    first: list[Any] = []
    assert await world.consume(durable, first.append, stop_after=4, batch=3) == 4
    assert [e.seq for e in first] == [1, 2, 3, 4]
    assert (await world.consumer(durable)).ack_floor.stream_seq == 4

    appended += await world.append(5)  # more happen while the consumer is down
    second: list[Any] = []
    assert await world.consume(durable, second.append, stop_after=11, batch=4) == 11

    assert [e.seq for e in second] == list(range(5, 16)), "no acked event again, none skipped"
    assert all(e.delivered == 1 for e in second)
    assert [e.event_id for e in first + second] == [a.event_id for a in appended]
    third: list[Any] = []
    assert await world.consume_for(1.0, durable, third.append) == 0
    assert third == []
    assert_acked_everything(await world.consumer(durable), 15)


async def test_a_stop_mid_batch_hands_the_rest_back_for_the_next_run(world: World) -> None:
    await world.append(6)
    durable = durable_name()
    stop = asyncio.Event()
    first: list[Any] = []

    def handle(event: Any) -> None:
        first.append(event)
        if event.seq == 2:
            stop.set()  # Ctrl-C while the batch of six is being handled

    assert await world.consume(durable, handle, stop=stop, batch=6) == 2
    assert [e.seq for e in first] == [1, 2]
    second: list[Any] = []
    assert await world.consume(durable, second.append, stop_after=4, ack_wait=30.0) == 4

    assert [e.seq for e in second] == [3, 4, 5, 6], "returned at once (not after ack_wait), in order"
    assert_acked_everything(await world.consumer(durable), 6)


async def test_a_failed_event_is_redelivered_in_order_and_acked_once_handled(world: World) -> None:
    await world.append(6)
    durable = durable_name()
    attempts: list[tuple[int, int]] = []
    handled: list[int] = []

    def handle(event: Any) -> None:
        attempts.append((event.seq, event.delivered))
        if event.seq == 3 and event.delivered == 1:
            raise RuntimeError("the extension's database is down")
        handled.append(event.seq)

    assert await world.consume(durable, handle, stop_after=6, retry_delay=0.2) == 6

    assert handled == [1, 2, 3, 4, 5, 6]
    assert attempts[:4] == [(1, 1), (2, 1), (3, 1), (3, 2)], attempts
    assert [seq for seq, _ in attempts] == [1, 2, 3, 3, 4, 5, 6]
    assert_acked_everything(await world.consumer(durable), 6)


async def test_an_event_not_acked_before_a_crash_is_redelivered_after_ack_wait(world: World) -> None:
    await world.append(5)
    durable = durable_name()
    first: list[Any] = []
    stuck = asyncio.Event()

    async def handle(event: Any) -> None:
        first.append(event)
        if event.seq == 2:
            stuck.set()
            await asyncio.Event().wait()  # hangs until the process "crashes"

    crashed = asyncio.create_task(world.consume(durable, handle, ack_wait=1.0, batch=5))
    await asyncio.wait_for(stuck.wait(), TIMEOUT)
    crashed.cancel()
    await asyncio.gather(crashed, return_exceptions=True)
    assert [e.seq for e in first] == [1, 2]
    info = await world.consumer(durable)
    assert info.ack_floor.stream_seq == 1 and info.num_ack_pending == 4, info

    second: list[Any] = []
    assert await world.consume(durable, second.append, stop_after=4) == 4

    assert [e.seq for e in second] == [2, 3, 4, 5], "the unacked ones again, the acked one not"
    assert all(e.delivered == 2 for e in second)
    assert_acked_everything(await world.consumer(durable), 5)


async def test_the_subject_filter_limits_what_a_consumer_gets(world: World) -> None:
    await world.append(2, stream_type="alpha")
    wanted = await world.append(3, stream_type="beta", site_id="site-1")
    await world.append(2, stream_type="beta")
    durable = durable_name()
    got: list[Any] = []

    subject = f"{world.stream.prefix}.site-1.beta.>"
    assert await world.consume(durable, got.append, stop_after=3, subject=subject) == 3
    assert [e.event_id for e in got] == [w.event_id for w in wanted]
    assert all(e.subject == f"{world.stream.prefix}.site-1.beta.Happened" for e in got)
    assert await world.consume_for(0.6, durable, got.append, subject=subject) == 0


async def test_a_durable_of_another_subject_is_refused_with_a_clear_error(world: World) -> None:
    await world.append(1)
    durable = durable_name()
    assert await world.consume(durable, lambda e: None, stop_after=1) == 1

    with pytest.raises(example.ConsumerSetupError, match="already exists"):
        await world.consume(durable, lambda e: None, stop_after=1, subject=f"{world.stream.prefix}.global.>")


async def test_a_missing_stream_is_a_clear_error(world: World) -> None:
    with pytest.raises(example.ConsumerSetupError, match="not found"):
        await asyncio.wait_for(
            example.consume(world.nats_url, "NO_SUCH_STREAM_" + uuid4().hex[:6].upper(), "nothing.>", durable_name(), print),
            TIMEOUT,
        )


async def test_the_program_prints_a_line_per_event_and_stops_cleanly_on_ctrl_c(world: World) -> None:
    appended = await world.append(4)
    durable = durable_name()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARTER_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE),
        "--nats-url", world.nats_url, "--stream", world.stream.name, "--subject", world.subject, "--durable", durable,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        lines = []
        async with asyncio.timeout(TIMEOUT):
            while len(lines) < 4:
                line = await process.stdout.readline()
                assert line, (await process.stderr.read()).decode()
                lines.append(line.decode().rstrip("\n"))
        await eventually(lambda: _acked(world, durable, 4), "all four acked")
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert code == 0
    assert lines == [f"{i}\t{a.event_type}\t{a.stream_id}\tposition={a.position}" for i, a in enumerate(appended, 1)]
    assert "stopped after 4 event(s)" in (await process.stderr.read()).decode()
    assert_acked_everything(await world.consumer(durable), 4)


async def _acked(world: World, durable: str, seq: int) -> bool:
    return (await world.consumer(durable)).ack_floor.stream_seq >= seq
