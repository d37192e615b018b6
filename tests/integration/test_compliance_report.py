"""The compliance report and the as-of state, replayed from the real event store: the report as of three
points of one site's history (activations, a reconfiguration, signoffs and their invalidation) matches
what the story says by hand, in JSON and in CSV; the same point renders to the same bytes again, also
after later events; a plugin is rebuilt as it was."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from application.as_of import AsOf, AsOfInvalid, fixed_window
from application.plugins.as_of import plugin_as_of
from application.sites.commands import RenameSite
from application.sites.report_render import digest_holds, render
from application.sites.reports import compliance_report, features_as_of
from domain.plugins.plugin import Plugin
from domain.sites.errors import SiteNotFound
from tests.compliance_story import SCHEMA, Story, World, unique, world  # noqa: F401  (the fixture)


def signoff(aspect: str, name: str, user_id: str, meaning: str, notes: str) -> dict[str, Any]:
    return {"aspect": aspect, "signer_name": name, "signer_id": user_id, "role": "quality-focal", "meaning": meaning,
            "notes": notes}


ESIG = {"aspect": "esig", "role": "quality-focal", "meaning": "Approved for production"}
AUDIT = {"aspect": "audit", "role": "quality-focal", "meaning": "Reviewed the audit trail"}


def expected_extensions(story: Story, point: int) -> list[dict[str, Any]]:
    """What the report must say of the extensions at point 1, 2 or 3 (by hand, from the story)."""
    erp = {"plugin_id": story.erp, "version": "1.0"}
    if point == 1:
        ann = signoff("esig", "Ann Quality", story.ann, ESIG["meaning"], '=HYPERLINK("http://evil")')
        carl = signoff("audit", "Carl Review", story.carl, AUDIT["meaning"], "<script>alert(1)</script>")
        return [{**erp, "configuration_hash": story.h1, "fully_signed": True, "signoffs": [ann, carl], "pending_aspects": []}]
    ann = signoff("esig", "Ann Quality", story.ann, ESIG["meaning"], "")
    if point == 2:
        mes = {"plugin_id": story.mes, "version": "1.0", "configuration_hash": None, "fully_signed": True, "signoffs": [],
               "pending_aspects": []}
        return [{**erp, "configuration_hash": story.h2, "fully_signed": False, "signoffs": [ann], "pending_aspects": [AUDIT]},
                mes]  # erp-… sorts before mes-…
    carl = signoff("audit", "Carl Review", story.carl, AUDIT["meaning"], "checked")
    return [{**erp, "configuration_hash": story.h2, "fully_signed": True, "signoffs": [ann, carl], "pending_aspects": []}]


def comparable(extensions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for x in extensions:
        row = {k: x[k] for k in ("plugin_id", "version", "configuration_hash", "fully_signed", "pending_aspects")}
        if x["plugin_id"].startswith("mes-"):
            row["configuration_hash"] = None
        row["signoffs"] = [{k: v for k, v in s.items() if k != "signed_at"} for s in x["signoffs"]]
        out.append(row)
    return out


@pytest.mark.parametrize("kind", ["position", "instant"])
async def test_the_report_as_of_three_points_says_what_the_story_did(world: World, kind: str) -> None:
    story = await world.story()
    for number, point in enumerate(story.points, start=1):
        as_of = AsOf(position=point.position) if kind == "position" else AsOf(instant=point.instant)
        report = await compliance_report(world.history, story.site_id, as_of)

        assert comparable(report["extensions"]) == expected_extensions(story, number), f"point {number}"
        assert report["site"] == {"site_id": story.site_id, "name": 'Plant <North> & "Co"', "timezone": "Europe/Paris",
                                  "retired": False}
        assert report["as_of"] == as_of.text()
        erp = next(x for x in report["extensions"] if x["plugin_id"] == story.erp)
        assert erp["activated"]["by"] == story.bob and erp["activated"]["by_name"] == "Bob Admin"
        if kind == "position":
            assert report["position"] == point.position
    site_events = await world.store.read_stream(f"site:{story.site_id}")
    assert [c["event"] for c in report["changes"]] == [e.event_type.split(".")[1] for e in site_events] == [
        "Created", "SignoffRecorded", "SignoffRecorded", "ExtensionActivated", "ExtensionActivated",
        "ExtensionReconfigured", "SignoffInvalidated", "SignoffInvalidated", "SignoffRecorded", "SignoffRecorded",
        "ExtensionDeactivated",
    ]


async def test_the_window_lists_the_changes_after_since(world: World) -> None:
    story = await world.story()
    first, third = story.points[0], story.points[2]

    report = await compliance_report(world.history, story.site_id, AsOf(position=third.position),
                                     AsOf(instant=first.instant))

    assert [(c["event"], c["plugin_id"], c["by_name"]) for c in report["changes"]] == [
        ("ExtensionActivated", story.mes, "Bob Admin"),
        ("ExtensionReconfigured", story.erp, "Bob Admin"),
        ("SignoffInvalidated", story.erp, "Bob Admin"),
        ("SignoffInvalidated", story.erp, "Bob Admin"),
        ("SignoffRecorded", story.erp, "Ann Quality"),
        ("SignoffRecorded", story.erp, "Carl Review"),
        ("ExtensionDeactivated", story.mes, "Bob Admin"),
    ]
    assert report["changes"][1]["detail"] == f"reconfigured {story.h1} -> {story.h2} (changed: endpoint); reason: v2 endpoint"
    assert report["changes"][2]["detail"] == (f"signoff of esig for {story.h1} invalidated: the configuration it"
                                              " approved was replaced")
    assert report["since"] == first.instant.isoformat(timespec="microseconds").replace("+00:00", "Z")


async def test_the_csv_holds_the_same_facts_one_row_each(world: World) -> None:
    story = await world.story()
    report = await compliance_report(world.history, story.site_id, AsOf(position=story.points[0].position))

    document = render(report, "csv").document
    rows = list(csv.DictReader(io.StringIO(document.decode("utf-8-sig"), newline="")))

    assert document.startswith(b"\xef\xbb\xbfrecord,site_id,plugin_id,") and b"\r\n" in document
    assert [r["record"] for r in rows] == ["report", "extension", "signoff", "signoff", *["change"] * 4, "sha256"]
    signoffs = [r for r in rows if r["record"] == "signoff"]
    assert [(r["aspect"], r["name"], r["role"], r["meaning"], r["configuration_hash"]) for r in signoffs] == [
        ("esig", "Ann Quality", "quality-focal", ESIG["meaning"], story.h1),
        ("audit", "Carl Review", "quality-focal", AUDIT["meaning"], story.h1),
    ]
    assert signoffs[0]["detail"] == "'=HYPERLINK(\"http://evil\")"  # the spreadsheet shows text, runs nothing
    extension = rows[1]
    assert (extension["plugin_id"], extension["version"], extension["configuration_hash"], extension["name"],
            extension["by"]) == (story.erp, "1.0", story.h1, "Bob Admin", story.bob)
    assert rows[0]["position"] == str(story.points[0].position)
    assert digest_holds(document, rows[-1]["detail"])
    second = render(await compliance_report(world.history, story.site_id, AsOf(position=story.points[1].position)), "csv")
    pending = [(r["plugin_id"], r["aspect"], r["role"]) for r in csv.DictReader(io.StringIO(second.document.decode("utf-8-sig")))
               if r["record"] == "pending"]
    assert pending == [(story.erp, "audit", "quality-focal")]


@pytest.mark.parametrize("fmt", ["json", "csv", "html"])
async def test_the_same_point_renders_the_same_bytes_also_after_later_events(world: World, fmt: str) -> None:
    story = await world.story()
    now = datetime.now(timezone.utc)
    point, _ = await fixed_window(world.history, None, None, now)  # "now", made a position
    first = render(await compliance_report(world.history, story.site_id, point), fmt)
    at_instant = render(await compliance_report(world.history, story.site_id, AsOf(instant=story.points[1].instant)), fmt)

    await world.run(RenameSite(site_id=story.site_id, name="Plant South"), story.bob)
    again = render(await compliance_report(world.history, story.site_id, point), fmt)
    instant_again = render(await compliance_report(world.history, story.site_id, AsOf(instant=story.points[1].instant)), fmt)

    assert again.document == first.document and again.sha256 == first.sha256
    assert instant_again.document == at_instant.document
    assert digest_holds(first.document, first.sha256)
    later = render(await compliance_report(world.history, story.site_id, (await fixed_window(
        world.history, None, None, datetime.now(timezone.utc)))[0]), fmt)
    assert later.sha256 != first.sha256 and b"Plant South" in later.document
    if fmt == "json":
        body = json.loads(first.document)
        assert body["as_of"] == f"position:{point.position}" and body["sha256"] == first.sha256


async def test_features_as_of_answer_the_read_model_shape_with_secrets_masked(world: World) -> None:
    story = await world.story()

    items = await features_as_of(world.history, story.site_id, AsOf(position=story.points[0].position))

    assert len(items) == 1
    item = items[0]
    assert set(item) == {"plugin_id", "version", "configuration", "configuration_hash", "capabilities", "activated_at",
                         "activated_by", "is_fully_signed", "pending_aspects"}
    assert item["configuration"] == {"endpoint": "https://erp.example/v1", "token": "********"}
    assert (item["configuration_hash"], item["capabilities"], item["activated_by"]) == (story.h1, ["erp-integration"], story.bob)
    assert (item["is_fully_signed"], item["pending_aspects"]) == (True, [])
    later = await features_as_of(world.history, story.site_id, AsOf(position=story.points[1].position))
    assert [(i["plugin_id"], i["is_fully_signed"], i["pending_aspects"]) for i in later] == [
        (story.erp, False, ["audit"]), (story.mes, True, [])]


async def test_a_site_before_its_creation_or_unknown_is_not_found(world: World) -> None:
    story = await world.story()
    with pytest.raises(SiteNotFound):
        await compliance_report(world.history, story.site_id, AsOf(instant=datetime(2001, 1, 1, tzinfo=timezone.utc)))
    with pytest.raises(SiteNotFound):
        await compliance_report(world.history, unique("nowhere"), AsOf(position=story.points[0].position))


async def test_points_that_could_still_change_are_refused(world: World) -> None:
    now = datetime.now(timezone.utc)
    head = await world.history.settled_position()
    with pytest.raises(AsOfInvalid) as future:
        await fixed_window(world.history, "2999-01-01T00:00:00Z", None, now)
    with pytest.raises(AsOfInvalid) as beyond:
        await fixed_window(world.history, f"position:{head + 1000}", None, now)
    with pytest.raises(AsOfInvalid) as window:
        await fixed_window(world.history, f"position:{head}", f"position:{head + 1000}", now)
    assert (future.value.details["field"], beyond.value.details["field"], window.value.details["field"]) == (
        "as_of", "as_of", "since")


async def test_a_plugin_is_rebuilt_as_it_was(world: World) -> None:
    plugin_id = unique("cfg")
    await world.install(plugin_id, config_schema=SCHEMA)
    loaded = await world.repository.load(Plugin, "plugin", plugin_id, Plugin.create_id(plugin_id))
    first = await world.history.settled_position()
    loaded.aggregate.disable("incident 42")
    loaded.aggregate.configure({"endpoint": "https://later.example"}, ["endpoint"])
    await world.repository.save(loaded, {"actor": "system"})

    then = await plugin_as_of(world.history, plugin_id, AsOf(position=first))
    now = await plugin_as_of(world.history, plugin_id, AsOf(position=await world.history.settled_position()))

    assert (then["status"], then["enabled"], then["config"], then["stream_version"]) == ("enabled", True, {}, 1)
    assert (now["status"], now["disabled_reason"], now["config"], now["stream_version"]) == (
        "disabled", "incident 42", {"endpoint": "https://later.example"}, 3)
    assert then["versions"][0]["version"] == "1.0" and then["installed_at"] == now["installed_at"]
