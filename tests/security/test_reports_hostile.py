"""Hostile query parameters of the as-of routes: every bad `as_of`, `since` or `format` is a 400 naming
the parameter (never a 500, never a report of a point that could still change), and the happy path."""

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
