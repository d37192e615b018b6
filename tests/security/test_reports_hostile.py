"""Hostile query parameters of the as-of routes: every bad `as_of`, `since` or `format` is a 400 naming
the parameter (never a 500, never a report of a point that could still change), and the happy path; the
report archive's routes: bad ids and pages refused by name, another site's reports never shown."""

from __future__ import annotations

import pytest

from tests.e2e.plugin_kit import PLUGINS, assert_error, install, manifest, unique_id
from tests.e2e.report_kit import report_url, told, world  # noqa: F401  (fixtures)
from tests.compliance_story import Story

BAD_POINTS = [
    "yesterday", "2025-13-01T00:00:00Z", "2025-01-31T12:00:00", "position:-1", "position:1e3", "position:",
    "position:" + "9" * 19, "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2999-01-01T00:00:00Z",
    "position:" + "9" * 18, "x" * 65, "\x00", "2025-01-31T12:00:00Z; DROP TABLE events", "   ",
    "1969-12-31T23:59:59Z", "%s%s%s", "<script>",
]


@pytest.mark.parametrize("value", BAD_POINTS)
async def test_a_bad_as_of_is_refused_naming_it(client, value: str, told: Story) -> None:

    response = await client.get(report_url(told.site_id), params={"as_of": value})

    assert_error(response, 400, "VALIDATION_FAILED", field="as_of")


@pytest.mark.parametrize("value", [*BAD_POINTS, "position:999999999999"])
async def test_a_bad_or_huge_since_is_refused_naming_it(client, value: str, told: Story) -> None:

    response = await client.get(report_url(told.site_id), params={"since": value})

    assert_error(response, 400, "VALIDATION_FAILED", field="since")


async def test_a_since_after_as_of_is_refused(client, told: Story) -> None:
    first, second = told.points[0], told.points[1]

    response = await client.get(report_url(told.site_id), params={"as_of": f"position:{first.position}",
                                                                  "since": f"position:{second.position}"})

    assert_error(response, 400, "VALIDATION_FAILED", field="since")


@pytest.mark.parametrize("value", ["pdf", "JSON", "", "html;", "x" * 5000, "csv\r\nX-Evil: 1"])
async def test_an_unknown_format_is_refused_naming_it(client, value: str, told: Story) -> None:

    response = await client.get(report_url(told.site_id), params={"format": value})

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["field"] == "format"


async def test_a_plugin_as_of_is_checked_like_the_report(client) -> None:
    plugin_id = unique_id("hostile")
    assert (await install(client, manifest(plugin_id))).status_code == 201
    for value in ("soon", "position:999999999999", "2999-01-01T00:00:00Z"):
        response = await client.get(f"{PLUGINS}/{plugin_id}", params={"as_of": value})
        assert_error(response, 400, "VALIDATION_FAILED", field="as_of")


async def test_an_over_long_site_id_is_refused_and_the_happy_path_answers(client, told: Story) -> None:

    long_id = await client.get(report_url("s" * 500))
    happy = await client.get(report_url(told.site_id), params={"format": "html", "since": told.points[0].instant.isoformat(),
                                                               "as_of": f"position:{told.points[2].position}"})

    assert_error(long_id, 400, "VALIDATION_FAILED", field="site_id")
    assert happy.status_code == 200 and happy.text.startswith("<!DOCTYPE html>")


ARCHIVE = "/api/v1/site/{}/reports/archive"


@pytest.mark.parametrize("report_id", ["not-a-uuid", "0" * 65, "%00", "1' OR '1'='1", "x" * 5000])
async def test_a_malformed_archived_report_id_is_refused_naming_it(client, report_id: str) -> None:

    response = await client.get(ARCHIVE.format("plant-1") + "/" + report_id)

    assert 400 <= response.status_code < 500, response.text
    if len(report_id) < 1000:  # a path past the server's limit is refused before routing
        assert_error(response, 400, "VALIDATION_FAILED", field="report_id")


@pytest.mark.parametrize(("query", "field"), [({"limit": 0}, "limit"), ({"limit": 100_000}, "limit"), ({"skip": -1}, "skip"),
                                              ({"limit": "many"}, "limit")])
async def test_a_bad_archive_page_is_refused_naming_it(client, query: dict, field: str) -> None:

    response = await client.get(ARCHIVE.format("plant-1"), params=query)

    assert_error(response, 400, "VALIDATION_FAILED", field=field)


async def test_another_sites_archived_reports_stay_hidden_and_the_happy_path_answers(client) -> None:
    import asyncio

    from tests.e2e.access_kit import account_with
    from tests.e2e.site_kit import created_site

    mine, theirs = await created_site(client), await created_site(client)
    task_id = unique_id("archive")
    created = await client.post("/api/v1/tasks", json={
        "id": task_id, "name": "report", "schedule": {"kind": "interval", "every": 3600}, "site_id": theirs,
        "action": "reports.compliance", "payload": {"format": "csv"}, "enabled": False})
    assert created.status_code == 201, created.text
    assert (await client.post(f"/api/v1/tasks/{task_id}/run")).status_code == 202
    for _ in range(200):
        kept = (await client.get(ARCHIVE.format(theirs))).json()["items"]
        if kept:
            break
        await asyncio.sleep(0.1)
    [report] = kept
    auditor = await account_with(client, ("auditor", mine))

    listed = await client.get(ARCHIVE.format(theirs), headers=auditor.headers)
    fetched = await client.get(ARCHIVE.format(theirs) + "/" + report["id"], headers=auditor.headers)
    across = await client.get(ARCHIVE.format(mine) + "/" + report["id"], headers=auditor.headers)
    happy = await client.get(ARCHIVE.format(theirs) + "/" + report["id"])

    assert listed.status_code == 404 and fetched.status_code == 404  # as for a site that does not exist
    assert_error(across, 404, "REPORT_NOT_FOUND")  # its own site has no report of that id
    assert happy.status_code == 200 and happy.headers["content-type"].startswith("text/csv")
    assert happy.headers["Charter-Report-SHA256"] == report["sha256"]
