"""`GET /site/{id}/reports/compliance` and `GET /plugins/{id}?as_of=` through HTTP: the report in each
format with its digest and the point it covers, the same bytes when asked again (also for "now", once
echoed as a position), a plugin as it was, and a site the caller holds no grant for answering 404."""

from __future__ import annotations

import csv
import io
import json

import pytest

from application.as_of import AsOf
from application.sites.report_render import digest_holds, render
from application.sites.reports import compliance_report
from tests.e2e.access_kit import account_with, send
from tests.e2e.plugin_kit import PLUGINS, assert_error, install, manifest, unique_id
from tests.e2e.report_kit import report_url, told, world  # noqa: F401  (fixtures)
from tests.compliance_story import Story, World


async def test_the_json_report_is_the_replayed_report_with_its_digest(client, told: Story, world: World) -> None:
    first = told.points[0]

    response = await client.get(report_url(told.site_id), params={"as_of": f"position:{first.position}"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    expected = render(await compliance_report(world.history, told.site_id,
                                              AsOf(position=first.position)), "json")
    assert response.content == expected.document
    assert response.headers["charter-report-sha256"] == expected.sha256
    assert (response.headers["charter-as-of"], response.headers["charter-position"]) == (
        f"position:{first.position}", str(first.position))
    body = json.loads(response.content)
    assert [(x["plugin_id"], x["configuration_hash"], x["fully_signed"]) for x in body["extensions"]] == [
        (told.erp, told.h1, True)]


async def test_now_is_echoed_as_a_position_that_gives_the_same_bytes_again(client, told: Story) -> None:

    now = await client.get(report_url(told.site_id), params={"format": "csv"})
    point = now.headers["charter-as-of"]
    again = await client.get(report_url(told.site_id), params={"format": "csv", "as_of": point})

    assert now.status_code == again.status_code == 200
    assert point.startswith("position:") and again.content == now.content
    assert now.headers["content-type"].startswith("text/csv")
    assert now.headers["content-disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(now.content.decode("utf-8-sig"))))
    assert rows[0]["at"] == point and digest_holds(now.content, rows[-1]["detail"])


async def test_the_html_page_is_printable_and_runs_nothing(client, told: Story) -> None:

    response = await client.get(report_url(told.site_id),
                                params={"format": "html", "as_of": told.points[0].instant.isoformat()})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Plant &lt;North&gt; &amp; &quot;Co&quot;" in page and "Ann Quality" in page
    assert digest_holds(response.content, response.headers["charter-report-sha256"])


async def test_a_site_the_caller_holds_no_grant_for_is_not_found(client, told: Story) -> None:
    elsewhere = await account_with(client, ("compliance-officer", "some-other-site"))
    viewer = await account_with(client, ("viewer", told.site_id), ("compliance-officer", "some-other-site"))
    officer = await account_with(client, ("compliance-officer", told.site_id))

    hidden = await send(client, "GET", report_url(told.site_id), token=elsewhere.access_token)
    missing = await send(client, "GET", report_url("no-such-site"), token=elsewhere.access_token)
    forbidden = await send(client, "GET", report_url(told.site_id), token=viewer.access_token)
    allowed = await send(client, "GET", report_url(told.site_id), token=officer.access_token)

    assert_error(hidden, 404, "SITE_NOT_FOUND")
    assert_error(missing, 404, "SITE_NOT_FOUND")
    assert hidden.json()["error"]["message"] == f"site {told.site_id} is not known"
    assert_error(forbidden, 403, "FORBIDDEN")
    assert allowed.status_code == 200, allowed.text


async def test_a_plugin_as_of_a_position_is_shown_as_it_was(client, world: World) -> None:
    plugin_id = unique_id("asof")
    assert (await install(client, manifest(plugin_id), auto_enable=True)).status_code == 201
    before = await world.history.settled_position()
    assert (await client.post(f"{PLUGINS}/{plugin_id}/disable", json={"reason": "incident"})).status_code == 200

    then = await client.get(f"{PLUGINS}/{plugin_id}", params={"as_of": f"position:{before}"})
    now = await client.get(f"{PLUGINS}/{plugin_id}", params={"consistent": "true"})
    ancient = await client.get(f"{PLUGINS}/{plugin_id}", params={"as_of": "2001-01-01T00:00:00Z"})

    assert then.status_code == 200, then.text
    assert (then.json()["status"], then.json()["enabled"]) == ("enabled", True)
    assert then.headers["etag"] == f'"{then.json()["stream_version"]}"' and then.json()["stream_version"] < now.json()["stream_version"]
    assert then.headers["charter-as-of"] == f"position:{before}"
    assert (now.json()["status"], now.json()["disabled_reason"]) == ("disabled", "incident")
    assert {k: v for k, v in then.json().items() if k not in ("status", "enabled", "updated_at", "stream_version")} == {
        k: v for k, v in now.json().items() if k not in ("status", "enabled", "updated_at", "stream_version", "disabled_reason")
    } | {"disabled_reason": None}
    assert_error(ancient, 404, "PLUGIN_NOT_FOUND")


@pytest.mark.parametrize("fmt", ["json", "csv", "html"])
async def test_the_report_of_an_earlier_point_does_not_move(client, fmt: str, told: Story) -> None:
    params = {"format": fmt, "as_of": f"position:{told.points[1].position}", "since": told.points[0].instant.isoformat()}

    first = await client.get(report_url(told.site_id), params=params)
    assert (await install(client, manifest(unique_id("later")))).status_code == 201  # the log moves on
    second = await client.get(report_url(told.site_id), params=params)

    assert first.status_code == 200, first.text
    assert second.content == first.content


async def test_site_features_as_of_a_point_are_replayed_from_the_log(client, told: Story, world: World) -> None:
    first = told.points[0]
    url = f"/api/v1/site/{told.site_id}/features"

    then = await client.get(url, params={"as_of": f"position:{first.position}"})
    before = await client.get(url, params={"as_of": f"position:{first.position - 1}"})
    bad = await client.get(url, params={"as_of": "yesterday"})

    assert then.status_code == 200, then.text
    body = then.json()
    assert body["as_of"] == f"position:{first.position}"
    assert [(f["plugin_id"], f["configuration_hash"], f["is_fully_signed"]) for f in body["features"]] == [
        (told.erp, told.h1, True)]
    assert before.status_code == 200 and before.json()["features"] == []
    assert_error(bad, 400, "VALIDATION_FAILED", field="as_of")
