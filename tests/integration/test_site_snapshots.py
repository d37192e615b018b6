"""Snapshots of a site's report state never change a report: across the compliance story, as of every
position of the log it spans and at instants between, with and without a `since` window, the report
from snapshots (taken every 2 versions, so nearly every point starts from one) is byte-identical to the
one replayed whole; a snapshot of another state version, or whose event no longer carries its hash, is
ignored and taken again."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from application.as_of import AsOf
from application.sites import report_state
from application.sites.report_render import render
from application.sites.reports import compliance_report, features_as_of
from infrastructure.eventlog.as_of import StoreHistory, read_stream_until
from infrastructure.sites import snapshots
from tests.compliance_story import World, world  # noqa: F401  (the fixture)


async def both(world: World, site_id: str, point: AsOf, since: AsOf | None, fmt: str = "json") -> tuple[bytes, bytes]:
    whole = StoreHistory(world.history.pool, snapshot_every=0)
    snapped = StoreHistory(world.history.pool, snapshot_every=2)
    first = render(await compliance_report(whole, site_id, point, since), fmt).document
    second = render(await compliance_report(snapped, site_id, point, since), fmt).document
    return first, second


async def snapshot_rows(world: World, site_id: str) -> list[tuple[int, int]]:
    rows = await world.history.pool.fetch(
        "SELECT state_version, stream_version FROM site_snapshots WHERE stream_id = $1 ORDER BY 1, 2", f"site:{site_id}")
    return [(r["state_version"], r["stream_version"]) for r in rows]


async def test_reports_from_snapshots_are_byte_identical_at_every_point_of_the_story(world: World) -> None:
    story = await world.story()
    events = await read_stream_until(world.history.pool, f"site:{story.site_id}")
    first, last = events[0].position, events[-1].position + 2
    rng = random.Random(12)
    for position in range(first, last + 1):
        point = AsOf(position=position)
        for since in (None, AsOf(position=rng.randint(first - 1, position)), AsOf(position=position)):
            whole, snapped = await both(world, story.site_id, point, since)
            assert snapped == whole, (position, since)
    taken = await snapshot_rows(world, story.site_id)
    assert taken and all(v % 2 == 0 for _, v in taken)
    for e in events:  # instants: at each event, just before it, and windows starting at instants
        for instant in (e.recorded_at, e.recorded_at - timedelta(microseconds=1)):
            since = AsOf(instant=events[0].recorded_at + (instant - events[0].recorded_at) / 2)
            for window in (None, since):
                if instant < events[0].recorded_at:
                    continue
                whole, snapped = await both(world, story.site_id, AsOf(instant=instant), window, "csv")
                assert snapped == whole, (instant, window)
    for point in story.points:
        whole = StoreHistory(world.history.pool, snapshot_every=0)
        snapped = StoreHistory(world.history.pool, snapshot_every=2)
        assert (await features_as_of(snapped, story.site_id, AsOf(position=point.position))
                == await features_as_of(whole, story.site_id, AsOf(position=point.position)))


async def test_a_snapshot_of_another_state_version_is_ignored_and_taken_again(world: World,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    story = await world.story()
    head = AsOf(position=story.points[-1].position)
    snapped = StoreHistory(world.history.pool, snapshot_every=2)
    expected = render(await compliance_report(snapped, story.site_id, head), "json").document
    before = await snapshot_rows(world, story.site_id)
    assert {s for s, _ in before} == {report_state.STATE_VERSION}
    # Old snapshots hold garbage in the shape of the current version's code: they must not be read.
    await world.history.pool.execute("UPDATE site_snapshots SET state = '\\x00'::bytea WHERE stream_id = $1",
                                     f"site:{story.site_id}")
    monkeypatch.setattr(snapshots, "STATE_VERSION", report_state.STATE_VERSION + 1)
    again = render(await compliance_report(snapped, story.site_id, head), "json").document
    assert again == expected
    after = await snapshot_rows(world, story.site_id)
    assert {v for s, v in after if s == report_state.STATE_VERSION + 1} == {v for _, v in before}


async def test_a_snapshot_whose_event_no_longer_carries_its_hash_is_ignored(world: World) -> None:
    story = await world.story()
    head = AsOf(position=story.points[-1].position)
    whole = render(await compliance_report(StoreHistory(world.history.pool, 0), story.site_id, head), "json").document
    snapped = StoreHistory(world.history.pool, snapshot_every=2)
    await compliance_report(snapped, story.site_id, head)
    # As if taken of another log: the event at its version carries another hash.
    await world.history.pool.execute("UPDATE site_snapshots SET hash = '\\xdead'::bytea WHERE stream_id = $1",
                                     f"site:{story.site_id}")
    assert render(await compliance_report(snapped, story.site_id, head), "json").document == whole
