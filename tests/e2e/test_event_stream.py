"""The live event stream (GET /api/v1/events/stream, Server-Sent Events) against a real server.

The `fanout_server` is a uvicorn server with the relay and the event hub on a database and a JetStream
stream of its own; every test here shares it, so assertions look at the test's own streams (its plugin
ids or probe stream types) and never assume the test is alone. Without a filter the SSE ids are
consecutive JetStream sequences, which is what the resume tests use to prove "no gap, no duplicate".
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import nats
import pytest

from application.ports import AppendRequest, NewEvent
from infrastructure.eventlog.eventstore import GENESIS
from tests.e2e.plugin_kit import PLUGINS, assert_error, installed, manifest, unique_id

STREAM = "/api/v1/events/stream"
TIMEOUT = 10.0  # seconds a test waits for something that should arrive in milliseconds


# -- reading SSE --------------------------------------------------------------------------------------


@dataclass
class Frame:
    """One SSE frame (the lines up to a blank line)."""

    raw: bytes
    id: int | None = None
    event: str | None = None
    data: dict[str, Any] | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def stream_id(self) -> str | None:
        return self.data["stream_id"] if self.data else None


def parse_frame(raw: bytes) -> Frame:
    frame = Frame(raw=raw)
    data_lines: list[str] = []
    for line in raw.decode().split("\n"):
        if line.startswith(":"):
            frame.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            frame.id = int(value)
        elif name == "event":
            frame.event = value
        elif name == "data":
            data_lines.append(value)
        elif name == "retry":
            frame.retry = int(value)
        else:
            raise AssertionError(f"unexpected SSE line {line!r} in {raw!r}")
    if data_lines:
        frame.data = json.loads("\n".join(data_lines))
    return frame


class SSE:
    """An open SSE response read frame by frame."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.aiter_bytes()
        self._buffer = bytearray()
        self._scanned = 0
        self.ended = False
        self.events: list[Frame] = []  # every event frame read so far

    async def next_frame(self) -> Frame | None:
        """The next frame; None once the server ended the stream."""
        while (end := self._buffer.find(b"\n\n", self._scanned)) < 0:
            self._scanned = max(0, len(self._buffer) - 1)
            try:
                self._buffer += await anext(self._chunks)
            except StopAsyncIteration:
                self.ended = True
                return None
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        self._scanned = 0
        frame = parse_frame(raw)
        if frame.id is not None:
            self.events.append(frame)
        return frame

    async def events_until(self, done: Callable[[list[Frame]], bool], timeout: float = TIMEOUT) -> list[Frame]:
        """Event frames (heartbeats skipped) read from now on until `done(frames)` holds."""
        frames: list[Frame] = []
        try:
            async with asyncio.timeout(timeout):
                while not done(frames):
                    frame = await self.next_frame()
                    assert frame is not None, f"the stream ended early; events so far: {[f.raw for f in frames]}"
                    if frame.id is not None:
                        frames.append(frame)
        except TimeoutError:
            raise AssertionError(
                f"waited {timeout}s; got {[(f.id, f.event, f.stream_id) for f in frames]}"
            ) from None
        return frames


def count_of(stream_id: str, n: int) -> Callable[[list[Frame]], bool]:
    return lambda frames: sum(f.stream_id == stream_id for f in frames) >= n


def last_of(stream_id: str, event_type: str) -> Callable[[list[Frame]], bool]:
    return lambda frames: bool(frames) and frames[-1].stream_id == stream_id and frames[-1].event == event_type


@asynccontextmanager
async def sse(api: httpx.AsyncClient, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> AsyncIterator[SSE]:
    """An open stream, past its opening `retry: 2000` (the subscription exists from then on)."""
    async with api.stream("GET", STREAM, params=params, headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        stream = SSE(response)
        first = await asyncio.wait_for(stream.next_frame(), TIMEOUT)
        assert first is not None and first.retry == 2000, first
        yield stream


# -- making events ------------------------------------------------------------------------------------


async def restart(api: httpx.AsyncClient, plugin_id: str) -> dict[str, Any]:
    response = await api.post(f"{PLUGINS}/{plugin_id}/restart")
    assert response.status_code == 200, response.text
    return response.json()


async def reload(api: httpx.AsyncClient, plugin_id: str) -> dict[str, Any]:
    response = await api.post(f"{PLUGINS}/{plugin_id}/reload")
    assert response.status_code == 200, response.text
    return response.json()


async def append_probe(
    runtime: Any,
    stream_type: str,
    count: int = 1,
    *,
    site_id: str | None = None,
    payload_size: int = 0,
) -> str:
    """Append `count` events to a new stream of type `stream_type` straight into the store (they go
    through the relay and the hub like any other); answers the stream id."""
    stream_id = f"{stream_type}:{uuid.uuid4().hex[:12]}"
    events = [
        NewEvent(
            event_id=uuid.uuid4(),
            stream_id=stream_id,
            stream_type=stream_type,
            stream_version=version,
            event_type="Probe.Happened",
            payload={"n": version, "pad": "x" * payload_size},
            metadata={"actor": "e2e"},
            recorded_at=datetime.now(timezone.utc),
            site_id=site_id,
        )
        for version in range(1, count + 1)
    ]
    await runtime.store.append(AppendRequest(stream_id, 0, events, GENESIS))
    return stream_id


def probe_type() -> str:
    return f"probe-{uuid.uuid4().hex[:8]}"


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.01)


async def in_hub(hub: Any, stream_id: str, n: int) -> None:
    """Wait until the hub has received `n` events of `stream_id` and handed them out (events still in
    its few-millisecond batching window would also go to a client subscribing now)."""

    def arrived() -> bool:
        pending = any(d.stream_id == stream_id for d in hub._pending)
        return not pending and sum(d.stream_id == stream_id for d in hub.recent) >= n

    await until(arrived, what=f"{n} events of {stream_id} through the hub")


async def logged_positions(api: httpx.AsyncClient, up_to: int) -> list[int]:
    """Positions of the server's event log up to `up_to`, paged through GET /api/v1/events."""
    positions: list[int] = []
    after = 0
    while True:
        page = (await api.get("/api/v1/events", params={"after_position": after, "limit": 100})).json()
        positions += [e["position"] for e in page["items"] if e["position"] <= up_to]
        if not page["has_more"] or page["items"][-1]["position"] >= up_to:
            return positions
        after = page["items"][-1]["position"]


def assert_consecutive(frames: list[Frame], after: int) -> None:
    ids = [f.id for f in frames]
    assert ids == list(range(after + 1, after + 1 + len(ids))), f"gap or duplicate after {after}: {ids}"


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture
async def api(fanout_server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fanout_server.url, headers=fanout_server.headers, timeout=TIMEOUT) as http:
        yield http


@pytest.fixture
def hub(fanout_server):
    return fanout_server.runtime.hub


# -- tests --------------------------------------------------------------------------------------------


class TestLiveDelivery:
    async def test_a_client_receives_the_events_committed_after_it_connected(self, api, fanout_server, nats_url) -> None:
        before, pid = unique_id("sse"), unique_id("sse")
        await installed(api, manifest(before))
        await in_hub(fanout_server.runtime.hub, f"plugin:{before}", 1)  # published before the client comes

        async with sse(api) as stream:
            first = await installed(api, manifest(pid))
            second = await restart(api, pid)
            await restart(api, before)
            frames = await stream.events_until(lambda fs: count_of(f"plugin:{pid}", 2)(fs) and count_of(f"plugin:{before}", 1)(fs))

        mine = [f for f in frames if f.stream_id == f"plugin:{pid}"]
        assert [f.event for f in mine] == ["Plugin.Installed", "Plugin.Restarted"]
        assert [f.data["position"] for f in mine] == [first["position"], second["position"]]
        assert [f.data["stream_version"] for f in mine] == [1, 2]
        # the earlier plugin's install happened before the client connected: only its restart is sent
        assert [f.event for f in frames if f.stream_id == f"plugin:{before}"] == ["Plugin.Restarted"]
        assert [f.id for f in frames] == sorted({f.id for f in frames}), "ids must increase, each once"

        log = (await api.get("/api/v1/events", params={"stream": f"plugin:{pid}"})).json()["items"]
        settings = fanout_server.runtime.settings
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            for frame, logged in zip(mine, log, strict=True):
                envelope = frame.data
                assert {"event_id", "position", "stream_id", "event_type", "payload", "metadata"} <= set(envelope)
                assert envelope["stream_id"] == f"plugin:{pid}"
                assert envelope["stream_type"] == "plugin"
                assert envelope["event_type"] == frame.event
                assert envelope["event_id"] == logged["event_id"]
                assert envelope["position"] == logged["position"]
                assert envelope["payload"] == logged["payload"]
                assert envelope["metadata"] == logged["metadata"]
                # `id:` is the JetStream sequence of exactly this message, `data:` its body
                stored = await js.get_msg(settings.nats_stream, seq=frame.id)
                assert stored.subject == f"{settings.nats_subject_prefix}.global.plugin.{frame.event.split('.', 1)[1]}"
                assert json.loads(stored.data) == envelope
                assert stored.headers["Nats-Msg-Id"] == envelope["event_id"]
        finally:
            await nc.close()
        assert mine[0].data["payload"]["manifest"]["id"] == pid

    async def test_events_go_straight_to_the_transport_once_the_response_started(self, api, fanout_server) -> None:
        pid = unique_id("sse")
        async with sse(api) as stream:
            await installed(api, manifest(pid))
            frames = await stream.events_until(count_of(f"plugin:{pid}", 1))
            attached = [s for s in fanout_server.runtime.hub.subscribers if s.write is not None]
            # uvicorn's httptools protocol: every live client is written to through its transport, framed once
            assert attached and all(s.direct is not None for s in attached)
        assert [f.event for f in frames if f.stream_id == f"plugin:{pid}"] == ["Plugin.Installed"]

    async def test_heartbeat_comments_arrive_while_nothing_happens(self, api) -> None:
        async with sse(api, {"event_type": "Nothing.EverHappens"}) as stream:
            started = time.monotonic()
            beats = []
            async with asyncio.timeout(4):
                while len(beats) < 2:
                    frame = await stream.next_frame()
                    assert frame is not None
                    assert frame.id is None and frame.data is None, f"no event matches, got {frame.raw!r}"
                    beats.append((time.monotonic() - started, frame))
        assert [f.comments for _, f in beats] == [["heartbeat"], ["heartbeat"]]
        assert all(f.raw == b": heartbeat" for _, f in beats)
        assert beats[1][0] - beats[0][0] >= 0.5, "heartbeats come every sse_heartbeat (1 s) seconds"


class TestFilters:
    async def test_stream_type_filter_sends_only_that_stream_type(self, api, fanout_server) -> None:
        runtime = fanout_server.runtime
        wanted, other, also = probe_type(), probe_type(), probe_type()
        pid = unique_id("sse")

        async with sse(api, {"stream_type": f"{wanted},{also}"}) as stream:
            await installed(api, manifest(pid))
            await append_probe(runtime, other, 2)
            first = await append_probe(runtime, wanted, 2)
            await append_probe(runtime, other)
            second = await append_probe(runtime, also)
            await restart(api, pid)
            sentinel = await append_probe(runtime, wanted)
            frames = await stream.events_until(count_of(sentinel, 1))

        assert {f.data["stream_type"] for f in frames} <= {wanted, also}, [f.raw for f in frames]
        mine = [f.stream_id for f in frames if f.data["stream_type"] in (wanted, also)]
        assert mine == [first, first, second, sentinel]

    async def test_event_type_filter_takes_a_comma_separated_list(self, api, fanout_server) -> None:
        pid = unique_id("sse")
        await installed(api, manifest(pid))
        wanted = {"Plugin.Restarted", "Plugin.Reloaded"}

        async with sse(api, {"event_type": "Plugin.Restarted, Plugin.Reloaded"}) as stream:
            await restart(api, pid)
            await api.post(f"{PLUGINS}/{pid}/enable")
            await append_probe(fanout_server.runtime, probe_type())
            await reload(api, pid)
            frames = await stream.events_until(last_of(f"plugin:{pid}", "Plugin.Reloaded"))

        assert {f.event for f in frames} <= wanted, [f.raw for f in frames]
        assert [f.event for f in frames if f.stream_id == f"plugin:{pid}"] == ["Plugin.Restarted", "Plugin.Reloaded"]
        assert all(f.data["event_type"] == f.event for f in frames)

    async def test_site_filter_sends_only_that_sites_events(self, api, fanout_server) -> None:
        runtime = fanout_server.runtime
        site, other_site, kind = f"site-{uuid.uuid4().hex[:6]}", f"site-{uuid.uuid4().hex[:6]}", probe_type()

        async with sse(api, {"site_id": site, "stream_type": kind}) as stream:
            await append_probe(runtime, kind)  # global
            await append_probe(runtime, kind, site_id=other_site)
            at_site = await append_probe(runtime, kind, 2, site_id=site)
            frames = await stream.events_until(count_of(at_site, 2))

        assert [(f.stream_id, f.data["site_id"]) for f in frames] == [(at_site, site), (at_site, site)]

    async def test_global_as_a_site_sends_only_events_of_no_site(self, api, fanout_server) -> None:
        runtime = fanout_server.runtime
        kind = probe_type()

        async with sse(api, {"site_id": "global", "stream_type": kind}) as stream:
            await append_probe(runtime, kind, site_id="site-a")
            no_site = await append_probe(runtime, kind)
            frames = await stream.events_until(count_of(no_site, 1))

        assert [(f.stream_id, f.data["site_id"]) for f in frames] == [(no_site, None)]


class TestResume:
    async def test_last_event_id_resumes_with_exactly_the_missed_events_then_live_ones(self, api, hub) -> None:
        pid = unique_id("sse")
        sid = f"plugin:{pid}"
        async with sse(api) as stream:
            await installed(api, manifest(pid))
            await restart(api, pid)
            seen = await stream.events_until(count_of(sid, 2))
        last_id = seen[-1].id
        assert seen[-1].stream_id == sid

        missed = [await reload(api, pid), await restart(api, pid), await reload(api, pid)]
        await in_hub(hub, sid, 5)

        async with sse(api, headers={"Last-Event-ID": str(last_id)}) as stream:
            resumed = await stream.events_until(count_of(sid, 3))
            live = [await restart(api, pid), await reload(api, pid)]
            resumed += await stream.events_until(count_of(sid, 2))

        assert_consecutive(resumed, last_id)
        mine = [f for f in resumed if f.stream_id == sid]
        assert [f.data["position"] for f in mine] == [w["position"] for w in missed + live]
        assert [f.data["stream_version"] for f in mine] == [3, 4, 5, 6, 7]
        assert [f.event for f in mine] == [
            "Plugin.Reloaded", "Plugin.Restarted", "Plugin.Reloaded", "Plugin.Restarted", "Plugin.Reloaded",
        ]

    async def test_the_last_event_id_query_parameter_resumes_too(self, api, hub) -> None:
        pid = unique_id("sse")
        sid = f"plugin:{pid}"
        async with sse(api) as stream:
            await installed(api, manifest(pid))
            seen = await stream.events_until(count_of(sid, 1))
        last_id = seen[-1].id

        missed = [await restart(api, pid), await reload(api, pid)]
        await in_hub(hub, sid, 3)

        async with sse(api, {"last_event_id": last_id}) as stream:
            resumed = await stream.events_until(count_of(sid, 2))
            live = await restart(api, pid)
            resumed += await stream.events_until(count_of(sid, 1))

        assert_consecutive(resumed, last_id)
        assert [f.data["position"] for f in resumed if f.stream_id == sid] == [w["position"] for w in [*missed, live]]

    async def test_the_header_wins_over_the_query_parameter(self, api, hub) -> None:
        pid = unique_id("sse")
        sid = f"plugin:{pid}"
        async with sse(api) as stream:
            await installed(api, manifest(pid))
            seen = await stream.events_until(count_of(sid, 1))
        last_id = seen[-1].id
        missed = await restart(api, pid)
        await in_hub(hub, sid, 2)

        async with sse(api, {"last_event_id": 0}, {"Last-Event-ID": str(last_id)}) as stream:
            resumed = await stream.events_until(count_of(sid, 1))

        assert_consecutive(resumed, last_id)
        assert [f.data["position"] for f in resumed if f.stream_id == sid] == [missed["position"]]

    async def test_resuming_from_an_id_older_than_the_hubs_memory_replays_from_jetstream(self, api, hub, monkeypatch) -> None:
        pid = unique_id("sse")
        sid = f"plugin:{pid}"
        async with sse(api) as stream:
            await installed(api, manifest(pid))
            seen = await stream.events_until(count_of(sid, 1))
        last_id = seen[-1].id

        missed = [await restart(api, pid), await reload(api, pid), await restart(api, pid)]
        await in_hub(hub, sid, 4)
        hub.recent.clear()  # the missed events are no longer in memory: only JetStream has them
        replays: list[tuple[int, int]] = []
        original = hub.replay

        def spy(first: int, last: int, matches):
            replays.append((first, last))
            return original(first, last, matches)

        monkeypatch.setattr(hub, "replay", spy)

        async with sse(api, headers={"Last-Event-ID": str(last_id)}) as stream:
            resumed = await stream.events_until(count_of(sid, 3))
            live = await reload(api, pid)
            resumed += await stream.events_until(count_of(sid, 1))

        assert replays and replays[0][0] == last_id + 1, replays
        assert_consecutive(resumed, last_id)
        mine = [f for f in resumed if f.stream_id == sid]
        assert [f.data["position"] for f in mine] == [w["position"] for w in [*missed, live]]
        assert [f.data["stream_version"] for f in mine] == [2, 3, 4, 5]

    async def test_resuming_from_zero_replays_the_whole_stream_from_jetstream_and_memory_in_order(self, api, hub, fanout_server) -> None:
        hub.recent.clear()  # older events only in JetStream, newer ones in memory: both paths at once
        pid = unique_id("sse")
        sid = f"plugin:{pid}"
        await installed(api, manifest(pid))
        await restart(api, pid)
        await in_hub(hub, sid, 2)

        async with sse(api, headers={"Last-Event-ID": "0"}) as stream:
            frames = await stream.events_until(count_of(sid, 2))
            live = await reload(api, pid)
            frames += await stream.events_until(count_of(sid, 1))

        assert_consecutive(frames, 0)
        assert [f.event for f in frames if f.stream_id == sid] == ["Plugin.Installed", "Plugin.Restarted", "Plugin.Reloaded"]
        assert frames[-1].data["position"] == live["position"]
        positions = [f.data["position"] for f in frames]
        assert len(positions) == len(set(positions))
        assert set(positions) == set(await logged_positions(api, up_to=live["position"])), "every event of the log"

    @pytest.mark.parametrize("value", ["abc", "-1", "1.5", "12abc", "0x10"])
    async def test_a_malformed_last_event_id_header_is_refused(self, api, value) -> None:
        response = await api.get(STREAM, headers={"Last-Event-ID": value})

        assert_error(response, 400, "VALIDATION_FAILED", "Last-Event-ID")

    async def test_a_non_ascii_digit_last_event_id_is_refused_not_a_server_error(self, api) -> None:
        # "²" (latin-1 0xB2) passes str.isdigit() but int() refuses it
        response = await api.get(STREAM, headers=[(b"Last-Event-ID", "\u00b2".encode("latin-1"))])

        assert_error(response, 400, "VALIDATION_FAILED", "Last-Event-ID")

    async def test_a_malformed_last_event_id_query_parameter_is_refused(self, api) -> None:
        response = await api.get(STREAM, params={"last_event_id": "abc"})

        assert_error(response, 400, "VALIDATION_FAILED", "last_event_id")


# -- slow clients -------------------------------------------------------------------------------------


@asynccontextmanager
async def unread_stream(server: Any, params: dict[str, str]) -> AsyncIterator[socket.socket]:
    """An SSE request on a raw socket with a tiny receive buffer that the test does not read from."""
    url = urlsplit(server.url)
    headers = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, (url.hostname, url.port))
        request = f"GET {STREAM}?{urlencode(params)} HTTP/1.1\r\nHost: {url.netloc}\r\n{headers}Accept: text/event-stream\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        yield sock
    finally:
        sock.close()


async def read_to_end(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Everything the server sends until it ends the chunked response (or closes)."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(timeout):
        while not data.endswith(b"\r\n0\r\n\r\n"):
            chunk = await loop.sock_recv(sock, 1 << 20)
            if not chunk:
                break
            data += chunk
    return bytes(data)


async def new_subscriber(hub: Any, before: set[Any]) -> Any:
    await until(lambda: len(hub.subscribers - before) == 1, what="the new client's subscription")
    (sub,) = hub.subscribers - before
    return sub


def socket_buffer_events(payload: int, backlog: int) -> int:
    """Events of `payload` bytes that surely overflow what the kernel buffers for a client that does not
    read (the server's send buffer grows up to tcp_wmem's maximum), plus twice the backlog."""
    try:
        wmem_max = int(open("/proc/sys/net/ipv4/tcp_wmem").read().split()[2])
    except (OSError, IndexError, ValueError):
        wmem_max = 4 * 1024 * 1024
    return min(2000, int(wmem_max * 1.25 + 512 * 1024) // payload + 2 * backlog)


class TestSlowClients:
    BACKLOG = 20
    PAYLOAD = 200_000
    EVENTS = socket_buffer_events(PAYLOAD, BACKLOG)

    async def _flood(self, runtime: Any, kind: str) -> set[str]:
        """EVENTS big events, a few at a time (so no single hub batch comes near the backlog)."""
        streams: set[str] = set()
        for start in range(0, self.EVENTS, 4):
            group = range(start, min(start + 4, self.EVENTS))
            streams.update(await asyncio.gather(*(append_probe(runtime, kind, payload_size=self.PAYLOAD) for _ in group)))
        return streams

    async def test_a_slow_client_is_dropped_with_a_retry_hint_never_holding_back_a_fast_one_and_resumes_without_loss(
        self, api, hub, fanout_server
    ) -> None:
        kind = probe_type()
        params = {"stream_type": kind}
        dropped_before, normal_backlog = hub.dropped, hub.backlog
        hub.backlog = self.BACKLOG  # both clients below get this small limit
        try:
            before = set(hub.subscribers)
            async with sse(api, params) as fast:
                fast_sub = await new_subscriber(hub, before)
                async with unread_stream(fanout_server, params) as slow_socket:
                    slow_sub = await new_subscriber(hub, before | {fast_sub})
                    hub.backlog = normal_backlog
                    assert fast_sub.limit == slow_sub.limit == self.BACKLOG

                    reading = asyncio.create_task(fast.events_until(lambda fs: len(fs) >= self.EVENTS, timeout=30))
                    streams = await self._flood(fanout_server.runtime, kind)
                    received = await reading

                    # on the server: the slow client was dropped and let go, the fast one kept
                    await until(lambda: slow_sub.dropped, what="the slow client dropped")
                    assert slow_sub not in hub.subscribers
                    assert hub.dropped >= dropped_before + 1
                    assert not fast_sub.dropped and fast_sub in hub.subscribers
                    # the slow client, once it reads, finds a retry hint and the end of the stream
                    tail = await read_to_end(slow_socket)
        finally:
            hub.backlog = normal_backlog

        order = [f.stream_id for f in received]
        assert sorted(order) == sorted(streams), "the fast client gets every event once"
        assert [f.id for f in received] == sorted({f.id for f in received})

        assert tail.startswith(b"HTTP/1.1 200")
        assert tail.endswith(b"\r\n0\r\n\r\n"), tail[-200:]
        assert b"\nretry: 5000\n" in tail
        got_ids = [int(m) for m in re.findall(rb"\nid: (\d+)\n", tail)]
        got_streams = [m.decode() for m in re.findall(rb'\ndata: [^\n]*?"stream_id":"([^"]+)"', tail)]
        assert 0 < len(got_ids) < self.EVENTS
        assert got_streams == order[: len(got_ids)], "what it got before the drop is a prefix of the stream"

        # it comes back with its Last-Event-ID and gets exactly the rest
        async with sse(api, params, {"Last-Event-ID": str(got_ids[-1])}) as stream:
            rest = await stream.events_until(lambda fs: len(fs) >= self.EVENTS - len(got_ids))
        assert [f.stream_id for f in rest] == order[len(got_ids):]
        assert [f.id for f in rest] == [f.id for f in received][len(got_ids):]


class TestResources:
    async def test_a_client_that_disconnects_is_let_go_at_once(self, api, hub) -> None:
        before = len(hub.subscribers)
        async with sse(api, {"event_type": "Nothing.EverHappens"}):
            assert len(hub.subscribers) == before + 1
        closed = time.monotonic()

        await until(lambda: len(hub.subscribers) == before, timeout=2, what="the subscription released")
        assert time.monotonic() - closed < 0.5, "released on disconnect, not at the next heartbeat"

    async def test_many_clients_that_come_and_go_leave_nothing_behind(self, api, hub) -> None:
        before = len(hub.subscribers)
        for _ in range(5):
            async with sse(api), sse(api, {"stream_type": "plugin"}):
                assert len(hub.subscribers) == before + 2
        await until(lambda: len(hub.subscribers) == before, timeout=0.5, what="all subscriptions released")


async def test_without_nats_the_stream_answers_503_fanout_unavailable(client) -> None:
    response = await client.get(STREAM)

    assert_error(response, 503, "FANOUT_UNAVAILABLE")


async def test_hub_flushes_are_measured_in_metrics(api, fanout_server) -> None:
    def counts(text: str) -> tuple[float, float]:
        found = dict(re.findall(r"^(charter_sse_flush_(?:seconds|events)_count) (\S+)$", text, re.M))
        return float(found.get("charter_sse_flush_seconds_count", 0)), float(found.get("charter_sse_flush_events_count", 0))

    before = counts((await api.get("/metrics")).text)
    pid = unique_id("metrics")
    async with sse(api, {"stream_type": "plugin"}) as stream:
        await installed(api, manifest(pid))
        await stream.events_until(count_of(f"plugin:{pid}", 1))
    after = counts((await api.get("/metrics")).text)

    assert after[0] > before[0] and after[1] > before[1]


async def test_password_hashes_never_leave_the_log(api, fanout_server, nats_url) -> None:
    """The log keeps a user's password hash (signing in needs it); JetStream, SSE and the event log API
    get the event without it."""
    email = f"{unique_id('hash')}@example.com"
    async with sse(api, {"stream_type": "user"}) as stream:
        registered = await api.post("/api/v1/auth/register", json={"email": email, "password": "correct horse battery staple"})
        assert registered.status_code == 202, registered.text
        def registered_frame(f) -> bool:
            return f.event == "User.Registered" and f.data["payload"].get("email") == email

        frames = await stream.events_until(lambda frames: any(registered_frame(f) for f in frames))
        frame = next(f for f in frames if registered_frame(f))
    stream_id = frame.data["stream_id"]

    assert frame.event == "User.Registered"
    assert frame.data["payload"]["email"] == email and "password_hash" not in frame.data["payload"]
    assert b"argon2" not in frame.raw

    listed = (await api.get("/api/v1/events", params={"stream": stream_id})).json()["items"]
    assert [e["event_type"] for e in listed] == ["User.Registered"]
    assert "password_hash" not in listed[0]["payload"]

    settings = fanout_server.runtime.settings
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(settings.nats_stream)
        messages = [await js.get_msg(settings.nats_stream, seq=s) for s in range(max(1, info.state.last_seq - 20), info.state.last_seq + 1)]
    finally:
        await nc.close()
    published = [json.loads(m.data) for m in messages if json.loads(m.data)["stream_id"] == stream_id]
    assert len(published) == 1 and "password_hash" not in published[0]["payload"]

    async with fanout_server.runtime.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT payload->>'password_hash' FROM events WHERE stream_id = $1", stream_id)
    assert stored.startswith("$argon2id$")
