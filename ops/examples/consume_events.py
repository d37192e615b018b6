#!/usr/bin/env python3
"""Consume Charter's events from NATS JetStream with a durable pull consumer: an example for extension authors.

Charter publishes every event of its log, once and in the global order, to the JetStream stream
`CHARTER_EVENTS` on the subject `charter.events.<site|global>.<stream_type>.<EventName>`
(for example `charter.events.global.plugin.Installed`). The message body is the event envelope (JSON):
`event_id, position, transaction_id, stream_id, stream_type, stream_version, event_type,
schema_version, site_id, actor, recorded_at, payload, metadata` (the same JSON as an item of
`GET /api/v1/events` and the `data:` of an SSE event).

This program creates (or binds to) a DURABLE pull consumer named `--durable` with explicit acks, fetches
events in batches, hands each one to a handler (here: print one line) and acknowledges it only after
the handler returned. Because the consumer is durable, JetStream remembers what was acknowledged:

- stop it (Ctrl-C) and start it again with the same `--durable`: it continues right after the last
  acknowledged event; nothing acknowledged is delivered again, nothing is skipped;
- a handler that raises, or a process that dies before acknowledging, gets the event again
  (a failure negatively acknowledges the event and the rest of its batch, so they come back in order;
  a crash leaves them unacknowledged and JetStream redelivers them after `ack_wait`).

Delivery is therefore at-least-once: make the handler idempotent (each event has a unique `event_id`,
and its `position` only grows within the global order).

Run it (`--help` for all options):

    python ops/examples/consume_events.py --nats-url nats://127.0.0.1:4229 --durable my-extension \\
        --subject 'charter.events.*.plugin.>'

Or use it as a library:

    from consume_events import consume
    await consume(url, "CHARTER_EVENTS", "charter.events.>", "my-extension", handle=my_handler)

Requires only `nats-py` (already a dependency of Charter). With `opentelemetry-api` installed, each event
is handled inside a span that continues the trace of the command that made it (the message's W3C
`traceparent` header), so an OpenTelemetry trace shows the HTTP request, Charter's work and your handler
as one: configure an SDK tracer provider in your program (or pass `tracer=`) to export it.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

try:  # optional: tracing continues Charter's traces when OpenTelemetry is there
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - the example runs with nats-py alone
    propagate = trace = None

log = logging.getLogger("consume_events")

DEFAULT_NATS_URL = "nats://127.0.0.1:4229"  # where `charter serve` runs its embedded NATS when the port is free
DEFAULT_STREAM = "CHARTER_EVENTS"
DEFAULT_PREFIX = "charter.events"
DEFAULT_DURABLE = "example-consumer"


class ConsumerSetupError(RuntimeError):
    """The stream is missing, or the durable consumer exists with another subject filter."""


@dataclass(frozen=True)
class Event:
    """One event as received from JetStream."""

    seq: int  # the JetStream stream sequence (the `id:` of Charter's SSE stream)
    subject: str
    delivered: int  # how many times JetStream has delivered this message (1 the first time)
    envelope: dict[str, Any]  # the event envelope published by Charter
    headers: dict[str, str] = field(default_factory=dict)  # Nats-Msg-Id, Charter-*, traceparent

    @property
    def event_id(self) -> str:
        return self.envelope.get("event_id", "")

    @property
    def event_type(self) -> str:
        return self.envelope.get("event_type", "?")

    @property
    def stream_id(self) -> str:
        return self.envelope.get("stream_id", "?")

    @property
    def position(self) -> int | None:
        return self.envelope.get("position")


Handler = Callable[[Event], Awaitable[None] | None]


def print_event(event: Event) -> None:
    """The default handler: one line per event (seq, event type, stream id, position)."""
    print(f"{event.seq}\t{event.event_type}\t{event.stream_id}\tposition={event.position}", flush=True)


async def ensure_consumer(
    js: nats.js.JetStreamContext,
    stream: str,
    subject: str,
    durable: str,
    *,
    ack_wait: float = 30.0,
    deliver: str = "all",
    max_ack_pending: int = 1000,
) -> None:
    """Create the durable pull consumer, or check that the existing one filters the same subject.

    The settings (`ack_wait`, `deliver`, ...) apply when the consumer is created; an existing consumer
    keeps its own (delete it with `nats consumer rm` to change them)."""
    try:
        await js.stream_info(stream)
    except NotFoundError:
        raise ConsumerSetupError(
            f"JetStream stream {stream!r} not found: Charter creates it when it starts with NATS "
            "(is `charter serve` running against this NATS server, with the same CHARTER_NATS_STREAM?)"
        ) from None
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        config = ConsumerConfig(
            durable_name=durable,
            name=durable,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW if deliver == "new" else DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
        )
        await js.add_consumer(stream, config)
        log.info("created durable consumer %s on %s (subject %s)", durable, stream, subject)
        return
    if info.config.filter_subject != subject:
        raise ConsumerSetupError(
            f"durable consumer {durable!r} already exists on {stream!r} with subject "
            f"{info.config.filter_subject!r}, not {subject!r}: choose another --durable or delete that consumer"
        )
    log.info(
        "resuming durable consumer %s on %s: acknowledged up to stream seq %d, %d pending",
        durable,
        stream,
        info.ack_floor.stream_seq if info.ack_floor else 0,
        info.num_pending or 0,
    )


async def connect(nats_url: str, wait: float = 10.0) -> nats.NATS:
    """Connect, waiting up to `wait` seconds for the server; once connected, reconnect for as long as it takes."""

    async def on_error(exc: Exception) -> None:
        log.warning("NATS %s: %r", nats_url, exc)

    try:
        return await asyncio.wait_for(
            nats.connect(
                nats_url, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=1, error_cb=on_error
            ),
            wait,
        )
    except asyncio.TimeoutError:
        raise ConnectionError(f"cannot reach NATS at {nats_url} within {wait:g}s") from None


def _event_of(msg: Any) -> Event:
    meta = msg.metadata
    try:
        envelope = json.loads(msg.data)
    except ValueError:
        envelope = {"event_type": "?", "stream_id": "?", "raw": msg.data.decode("utf-8", "replace")}
    return Event(meta.sequence.stream, msg.subject, meta.num_delivered, envelope, dict(msg.headers or {}))


async def handle_traced(tracer: Any, handle: Handler, event: Event) -> None:
    """Run `handle(event)` in a consumer span whose parent is the span named by the event's traceparent
    (the command that recorded it), so the handler's work joins that trace."""
    parent = propagate.extract(event.headers)
    attributes = {"messaging.system": "nats", "messaging.destination.name": event.subject,
                  "messaging.message.id": event.event_id, "charter.event_type": event.event_type}
    with tracer.start_as_current_span(f"consume {event.event_type}", context=parent, kind=trace.SpanKind.CONSUMER,
                                      attributes=attributes):
        result = handle(event)
        if inspect.isawaitable(result):
            await result


async def consume(
    nats_url: str,
    stream: str,
    subject: str,
    durable: str,
    handle: Handler = print_event,
    stop_after: int | None = None,
    *,
    stop: asyncio.Event | None = None,
    batch: int = 64,
    fetch_timeout: float = 1.0,
    ack_wait: float = 30.0,
    deliver: str = "all",
    retry_delay: float = 5.0,
    connect_wait: float = 10.0,
    tracer: Any = None,
) -> int:
    """Consume events with the durable consumer `durable` until `stop` is set or `stop_after` events
    were handled; answer how many were handled (and acknowledged).

    `handle(event)` may be a plain or an async function. The event is acknowledged (and the server's
    confirmation awaited) once it returns. If it raises, the event and the rest of its batch are
    negatively acknowledged (redelivered in order after `retry_delay` seconds) and consuming goes on.
    With OpenTelemetry, each call runs in a span continuing the event's trace (`tracer`, or the global one).
    """
    if tracer is None and trace is not None:
        tracer = trace.get_tracer("charter.consume_events")
    nc = await connect(nats_url, connect_wait)
    handled = 0
    try:
        js = nc.jetstream()
        await ensure_consumer(js, stream, subject, durable, ack_wait=ack_wait, deliver=deliver)
        sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
        while not (stop is not None and stop.is_set()) and (stop_after is None or handled < stop_after):
            want = batch if stop_after is None else min(batch, stop_after - handled)
            try:
                msgs = await sub.fetch(want, timeout=fetch_timeout)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):  # nats-py raises both kinds
                continue  # nothing new; look at `stop` again
            for index, msg in enumerate(msgs):
                if stop is not None and stop.is_set():
                    # Stopping: hand the rest back at once so the next run gets them first, in order.
                    for rest in msgs[index:]:
                        await rest.nak()
                    break
                event = _event_of(msg)
                try:
                    if tracer is not None:
                        await handle_traced(tracer, handle, event)
                    else:
                        result = handle(event)
                        if inspect.isawaitable(result):
                            await result
                except Exception:
                    log.exception("handler failed on seq %d; it will be redelivered", event.seq)
                    for rest in msgs[index:]:
                        await rest.nak(delay=retry_delay)
                    break
                try:
                    await msg.ack_sync()
                except (asyncio.TimeoutError, nats.errors.TimeoutError):
                    log.warning("the ack of seq %d was not confirmed; the event may be delivered again", event.seq)
                handled += 1
        await sub.unsubscribe()  # the durable consumer stays on the server with its position
    finally:
        if not nc.is_closed:
            try:
                await nc.flush(timeout=2)  # naks still in the client's buffer go out before closing
            except Exception:
                pass
            await nc.close()  # (not drain(): it waits for leftover fetch status messages nobody reads)
    return handled


def parser() -> argparse.ArgumentParser:
    prefix = os.environ.get("CHARTER_NATS_SUBJECT_PREFIX") or DEFAULT_PREFIX
    p = argparse.ArgumentParser(
        description="Print Charter's events from JetStream with a durable consumer (acks each event after handling).",
    )
    p.add_argument("--nats-url", default=os.environ.get("CHARTER_NATS_URL") or DEFAULT_NATS_URL,
                   help="NATS server (default: $CHARTER_NATS_URL or %(default)s)" if not os.environ.get("CHARTER_NATS_URL")
                   else "NATS server (default: $CHARTER_NATS_URL = %(default)s)")
    p.add_argument("--stream", default=os.environ.get("CHARTER_NATS_STREAM") or DEFAULT_STREAM,
                   help="JetStream stream (default: $CHARTER_NATS_STREAM or %(default)s)")
    p.add_argument("--subject", default=f"{prefix}.>",
                   help="subject filter, e.g. 'charter.events.*.plugin.>' or 'charter.events.global.plugin.Installed'"
                        " (default: %(default)s)")
    p.add_argument("--durable", default=DEFAULT_DURABLE,
                   help="durable consumer name; reuse it to resume where the last run stopped (default: %(default)s)")
    p.add_argument("--batch", type=int, default=64, help="events fetched per request (default: %(default)s)")
    p.add_argument("--ack-wait", type=float, default=30.0,
                   help="seconds before an unacknowledged event is redelivered; used when the consumer is created")
    p.add_argument("--deliver", choices=["all", "new"], default="all",
                   help="where a NEW durable consumer starts: the whole stream, or only events from now on")
    p.add_argument("--stop-after", type=int, default=None, help="exit after handling this many events")
    p.add_argument("--connect-wait", type=float, default=10.0,
                   help="seconds to wait for NATS at start (once connected, it reconnects for as long as it takes)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the consumer does (to stderr)")
    return p


async def _run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # e.g. Windows: Ctrl-C raises KeyboardInterrupt instead
            pass
    handled = await consume(
        args.nats_url,
        args.stream,
        args.subject,
        args.durable,
        print_event,
        args.stop_after,
        stop=stop,
        batch=args.batch,
        ack_wait=args.ack_wait,
        deliver=args.deliver,
        connect_wait=args.connect_wait,
    )
    print(f"stopped after {handled} event(s); durable consumer {args.durable!r} resumes from here", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        return asyncio.run(_run(args))
    except ConsumerSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, nats.errors.NoServersError) as exc:
        print(f"error: {exc} (set --nats-url or CHARTER_NATS_URL)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
