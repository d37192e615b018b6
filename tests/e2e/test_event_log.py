"""The event log for auditors (GET /api/v1/events): paging, every filter, ordering and bad input.

The `client` app shares its database with the other e2e tests, so each test looks only at its own
streams (its plugin ids, or probe streams appended straight into the store with a stream type,
site, actor and time of the test's choosing).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from application.ports import AppendRequest, NewEvent
from infrastructure.eventlog.eventstore import GENESIS, EventStore, create_pool
from tests.e2e.plugin_kit import PLUGINS, assert_error, installed, manifest, unique_id

EVENTS = "/api/v1/events"
FIELDS = {  # the one event envelope (application/envelope.py), as JetStream and SSE carry it too
    "position", "transaction_id", "event_id", "stream_id", "stream_type", "stream_version", "event_type", "schema_version",
    "site_id", "actor", "recorded_at", "payload", "metadata",
}
T0 = datetime(2001, 2, 3, 4, 5, 6, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def events(client, **params: Any) -> dict[str, Any]:
    response = await client.get(EVENTS, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def positions(client, **params: Any) -> list[int]:
    return [e["position"] for e in (await events(client, **params))["items"]]


async def plugin_with_history(client, *actions: str) -> tuple[str, list[dict[str, Any]]]:
    """Install a plugin and run `actions` (restart, reload, enable, ...) on it; answers its id and the writes."""
    pid = unique_id("log")
    written = [await installed(client, manifest(pid))]
    for action in actions:
        response = await client.post(f"{PLUGINS}/{pid}/{action}")
        assert response.status_code == 200, response.text
        written.append(response.json())
    return pid, written


@pytest.fixture(scope="module")
async def store(database_url: str) -> AsyncIterator[EventStore]:
    """An event store on the `client` app's database, in this test's event loop (the in-memory app
    runs in a loop of its own), for events of a chosen type, site, actor and time."""
    pool = await create_pool(database_url, min_size=1, max_size=2)
    event_store = EventStore(pool, writers=1)
    await event_store.start()
    yield event_store
    await event_store.stop()
    await pool.close()


async def append_probe(
    client,
    store: EventStore,
    stream_type: str,
    count: int = 1,
    *,
    site_id: str | None = None,
    actor: str = "e2e-probe",
    at: list[datetime] | None = None,
) -> tuple[str, list[int]]:
    """`count` events of a new stream straight into the store; answers the stream id and positions."""
    stream_id = f"{stream_type}:{uuid.uuid4().hex[:12]}"
    new = [
        NewEvent(
            event_id=uuid.uuid4(),
            stream_id=stream_id,
            stream_type=stream_type,
            stream_version=version,
            event_type="Probe.Happened" if version % 2 else "Probe.Changed",
            payload={"n": version},
            metadata={"actor": actor},
            recorded_at=at[version - 1] if at else datetime.now(timezone.utc),
            site_id=site_id,
        )
        for version in range(1, count + 1)
    ]
    await store.append(AppendRequest(stream_id, 0, new, GENESIS))
    found = await events(client, stream=stream_id)
    return stream_id, [e["position"] for e in found["items"]]


def probe_type() -> str:
    return f"probe-{uuid.uuid4().hex[:8]}"


class TestPaging:
    async def test_pages_through_a_streams_events_in_order_with_has_more(self, client) -> None:
        pid, written = await plugin_with_history(client, "restart", "reload", "restart", "reload")
        stream = f"plugin:{pid}"

        pages = [await events(client, stream=stream, skip=skip, limit=2) for skip in (0, 2, 4)]

        assert [(p["total"], p["skip"], p["limit"], len(p["items"]), p["has_more"]) for p in pages] == [
            (5, 0, 2, 2, True),
            (5, 2, 2, 2, True),
            (5, 4, 2, 1, False),
        ]
        items = [e for p in pages for e in p["items"]]
        assert [e["position"] for e in items] == [w["position"] for w in written]
        assert [e["stream_version"] for e in items] == [1, 2, 3, 4, 5]
        assert [e["event_type"] for e in items] == [
            "Plugin.Installed", "Plugin.Restarted", "Plugin.Reloaded", "Plugin.Restarted", "Plugin.Reloaded",
        ]

    async def test_each_event_carries_the_full_envelope(self, client) -> None:
        pid, _ = await plugin_with_history(client)

        (event,) = (await events(client, stream=f"plugin:{pid}"))["items"]

        assert set(event) == FIELDS
        assert event["stream_id"] == f"plugin:{pid}" and event["stream_type"] == "plugin"
        assert uuid.UUID(event["event_id"])
        assert event["schema_version"] >= 1 and event["transaction_id"] >= 1
        assert event["site_id"] is None
        assert event["payload"]["manifest"]["id"] == pid
        assert event["actor"] and event["actor"] == event["metadata"]["actor"]
        recorded = datetime.fromisoformat(event["recorded_at"])
        assert recorded.tzinfo is not None
        assert abs(datetime.now(timezone.utc) - recorded) < timedelta(minutes=5)

    async def test_a_page_past_the_end_is_empty(self, client) -> None:
        pid, _ = await plugin_with_history(client, "restart")

        page = await events(client, stream=f"plugin:{pid}", skip=5)

        assert (page["total"], page["items"], page["has_more"]) == (2, [], False)

    async def test_sort_order_desc_gives_the_newest_first(self, client) -> None:
        pid, written = await plugin_with_history(client, "restart", "reload")

        page = await events(client, stream=f"plugin:{pid}", sort_order="desc", limit=2)

        assert [e["position"] for e in page["items"]] == [written[2]["position"], written[1]["position"]]
        assert page["has_more"] is True
        rest = await events(client, stream=f"plugin:{pid}", sort_order="desc", skip=2)
        assert [e["position"] for e in rest["items"]] == [written[0]["position"]]

    async def test_without_filters_it_lists_the_whole_log_in_position_order(self, client) -> None:
        await plugin_with_history(client)

        page = await events(client, limit=100)

        assert page["total"] >= len(page["items"]) >= 1
        listed = [e["position"] for e in page["items"]]
        assert listed == sorted(listed) and len(set(listed)) == len(listed)


class TestFilters:
    async def test_stream_keeps_one_streams_events(self, client) -> None:
        pid, written = await plugin_with_history(client, "restart")
        await plugin_with_history(client, "restart")

        assert await positions(client, stream=f"plugin:{pid}") == [w["position"] for w in written]

    async def test_stream_type_keeps_that_type_only(self, client, store) -> None:
        kind = probe_type()
        _, first = await append_probe(client, store, kind, 2)
        await append_probe(client, store, probe_type())
        _, second = await append_probe(client, store, kind)

        page = await events(client, stream_type=kind)

        assert [e["position"] for e in page["items"]] == first + second
        assert {e["stream_type"] for e in page["items"]} == {kind}

    async def test_event_type_takes_one_type_or_a_comma_separated_list(self, client) -> None:
        pid, written = await plugin_with_history(client, "restart", "enable", "reload", "restart")
        stream = f"plugin:{pid}"

        assert await positions(client, stream=stream, event_type="Plugin.Installed") == [written[0]["position"]]
        both = await events(client, stream=stream, event_type="Plugin.Restarted,Plugin.Reloaded")
        assert [e["position"] for e in both["items"]] == [written[i]["position"] for i in (1, 3, 4)]
        assert both["total"] == 3
        spaced = await positions(client, stream=stream, event_type=" Plugin.Enabled , Plugin.Nothing ")
        assert spaced == [written[2]["position"]]

    async def test_actor_keeps_what_that_actor_did(self, client, store) -> None:
        kind = probe_type()
        actor = f"auditor-{uuid.uuid4().hex[:8]}"
        _, mine = await append_probe(client, store, kind, 2, actor=actor)
        await append_probe(client, store, kind, actor="somebody-else")

        page = await events(client, actor=actor)

        assert [e["position"] for e in page["items"]] == mine
        assert {e["actor"] for e in page["items"]} == {actor}

    async def test_actor_of_api_writes_is_the_signed_in_user(self, client) -> None:
        pid, written = await plugin_with_history(client, "restart")
        actor = (await events(client, stream=f"plugin:{pid}"))["items"][0]["actor"]

        assert actor not in (None, "", "anonymous")
        assert await positions(client, stream=f"plugin:{pid}", actor=actor) == [w["position"] for w in written]
        assert await positions(client, stream=f"plugin:{pid}", actor="nobody-" + actor) == []

    async def test_since_is_inclusive_and_until_exclusive(self, client, store) -> None:
        kind = probe_type()
        times = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
        stream, p = await append_probe(client, store, kind, 3, at=times)

        assert await positions(client, stream=stream, since=iso(times[1])) == p[1:]
        assert await positions(client, stream=stream, until=iso(times[1])) == p[:1]
        assert await positions(client, stream=stream, since=iso(times[0]), until=iso(times[2])) == p[:2]
        assert await positions(client, stream=stream, since=iso(times[1]), until=iso(times[1])) == []
        assert await positions(client, stream=stream, since=iso(times[2] + timedelta(microseconds=1))) == []

    async def test_since_and_until_honour_the_time_zone_offset(self, client, store) -> None:
        kind = probe_type()
        times = [T0, T0 + timedelta(seconds=1)]
        stream, p = await append_probe(client, store, kind, 2, at=times)
        in_paris = times[1].astimezone(timezone(timedelta(hours=1)))

        assert await positions(client, stream=stream, since=in_paris.isoformat()) == p[1:]
        assert await positions(client, stream=stream, since=iso(times[1]).replace("+00:00", "Z")) == p[1:]

    async def test_since_and_until_bracket_api_writes(self, client) -> None:
        started = datetime.now(timezone.utc) - timedelta(seconds=1)
        pid, written = await plugin_with_history(client, "restart")
        ended = datetime.now(timezone.utc) + timedelta(seconds=1)
        stream = f"plugin:{pid}"

        assert await positions(client, stream=stream, since=iso(started), until=iso(ended)) == [w["position"] for w in written]
        assert await positions(client, stream=stream, since=iso(ended)) == []
        assert await positions(client, stream=stream, until=iso(started)) == []

    async def test_after_position_continues_after_a_known_event(self, client) -> None:
        pid, written = await plugin_with_history(client, "restart", "reload", "restart")
        stream = f"plugin:{pid}"

        assert await positions(client, stream=stream, after_position=written[1]["position"]) == [
            w["position"] for w in written[2:]
        ]
        assert await positions(client, stream=stream, after_position=written[-1]["position"]) == []
        assert await positions(client, stream=stream, after_position=0) == [w["position"] for w in written]

    async def test_site_id_keeps_that_sites_events_and_global_the_events_of_no_site(self, client, store) -> None:
        kind = probe_type()
        site = f"site-{uuid.uuid4().hex[:6]}"
        _, at_site = await append_probe(client, store, kind, 2, site_id=site)
        _, elsewhere = await append_probe(client, store, kind, site_id=f"site-{uuid.uuid4().hex[:6]}")
        _, no_site = await append_probe(client, store, kind)

        page = await events(client, stream_type=kind, site_id=site)
        assert [e["position"] for e in page["items"]] == at_site
        assert {e["site_id"] for e in page["items"]} == {site}
        glob = await events(client, stream_type=kind, site_id="global")
        assert [e["position"] for e in glob["items"]] == no_site
        assert [e["site_id"] for e in glob["items"]] == [None]
        assert await positions(client, stream_type=kind) == sorted(at_site + elsewhere + no_site)

    async def test_filters_combine(self, client) -> None:
        pid, written = await plugin_with_history(client, "restart", "reload", "restart")

        found = await events(
            client,
            stream=f"plugin:{pid}",
            stream_type="plugin",
            event_type="Plugin.Restarted",
            after_position=written[1]["position"],
        )

        assert [e["position"] for e in found["items"]] == [written[3]["position"]]
        assert await positions(client, stream=f"plugin:{pid}", stream_type="user") == []


class TestBadInput:
    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"limit": 101}, "limit"),
            ({"limit": 0}, "limit"),
            ({"limit": -5}, "limit"),
            ({"skip": -1}, "skip"),
            ({"sort_order": "sideways"}, "sort_order"),
            ({"limit": "many"}, "limit"),
            ({"skip": "some"}, "skip"),
            ({"after_position": "last"}, "after_position"),
        ],
    )
    async def test_bad_paging_or_position_is_a_400_naming_the_parameter(self, client, params, field) -> None:
        assert_error(await client.get(EVENTS, params=params), 400, "VALIDATION_FAILED", field)

    async def test_since_after_until_is_a_400(self, client) -> None:
        response = await client.get(EVENTS, params={"since": iso(T0), "until": iso(T0 - timedelta(seconds=1))})

        assert_error(response, 400, "VALIDATION_FAILED", "since")

    @pytest.mark.parametrize("field", ["since", "until"])
    @pytest.mark.parametrize("value", ["yesterday", "2001-13-45T00:00:00Z", "2001-02-03T25:00:00Z", "12:00"])
    async def test_a_bad_datetime_is_a_400_not_a_500(self, client, field, value) -> None:
        response = await client.get(EVENTS, params={field: value})

        assert_error(response, 400, "VALIDATION_FAILED", field)

    async def test_a_time_without_offset_next_to_one_with_an_offset_is_not_a_500(self, client) -> None:
        # one naive and one aware datetime cannot be compared in Python: answer it, or refuse it as bad input
        response = await client.get(EVENTS, params={"since": "2001-02-03T04:05:06", "until": "2001-02-04T04:05:06Z"})

        if response.status_code != 200:
            assert_error(response, 400, "VALIDATION_FAILED")
