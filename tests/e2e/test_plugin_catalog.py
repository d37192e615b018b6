"""The plugin catalog through HTTP: the list, one plugin's details, and stored archives."""

from __future__ import annotations

import hashlib

from tests.e2e.plugin_kit import (
    PLUGINS,
    archive,
    assert_error,
    current,
    details,
    installed,
    manifest,
    unique_id,
    update,
)


async def listing(client, **params) -> dict:
    response = await client.get(PLUGINS, params={"consistent": "true", **params})
    assert response.status_code == 200, response.text
    return response.json()


def ids(page: dict) -> list[str]:
    return [item["id"] for item in page["items"]]


class TestListPlugins:
    async def test_answers_the_page_envelope_and_pages_through_a_category(self, client) -> None:
        category = unique_id("cat")
        plugins = [unique_id("page") for _ in range(3)]
        for pid in plugins:
            await installed(client, manifest(pid, category=category))

        first = await listing(client, category=category, limit=2, sort_by="id")
        second = await listing(client, category=category, limit=2, skip=2, sort_by="id")

        assert set(first) == {"total", "skip", "limit", "items", "has_more"}
        assert (first["total"], first["skip"], first["limit"], first["has_more"]) == (3, 0, 2, True)
        assert (second["total"], second["skip"], second["limit"], second["has_more"]) == (3, 2, 2, False)
        assert ids(first) + ids(second) == sorted(plugins)

    async def test_a_skip_past_the_end_answers_an_empty_page(self, client) -> None:
        category = unique_id("cat")
        await installed(client, manifest(unique_id(), category=category))

        page = await listing(client, category=category, skip=5)

        assert (page["total"], page["items"], page["has_more"]) == (1, [], False)

    async def test_items_summarise_each_plugin(self, client) -> None:
        category = unique_id("cat")
        pid = unique_id()
        await installed(
            client,
            manifest(pid, category=category, description="Reads meters", author="Ops", tags=["iot"], capabilities=["METER_READ"]),
        )

        [item] = (await listing(client, category=category))["items"]

        assert item["id"] == pid
        assert item["name"] == f"Plugin {pid}"
        assert item["version"] == "1.0.0"
        assert (item["description"], item["author"], item["category"]) == ("Reads meters", "Ops", category)
        assert (item["tags"], item["capabilities"]) == (["iot"], ["METER_READ"])
        assert (item["status"], item["enabled"], item["disabled_reason"]) == ("installed", False, None)
        assert item["dependents"] == []
        assert item["stream_version"] == 1

    async def test_filters_by_status_and_active_only(self, client) -> None:
        category = unique_id("cat")
        on, idle, off = unique_id("on"), unique_id("idle"), unique_id("off")
        await installed(client, manifest(on, category=category), auto_enable=True)
        await installed(client, manifest(idle, category=category))
        await installed(client, manifest(off, category=category), auto_enable=True)
        assert (await client.post(f"{PLUGINS}/{off}/disable", json={"reason": "noisy"})).status_code == 200

        assert ids(await listing(client, category=category, status="enabled")) == [on]
        assert ids(await listing(client, category=category, status="installed")) == [idle]
        assert ids(await listing(client, category=category, status="disabled")) == [off]
        assert ids(await listing(client, category=category, active_only="true")) == [on]
        assert sorted(ids(await listing(client, category=category))) == sorted([on, idle, off])

    async def test_filters_by_category(self, client) -> None:
        mine, other = unique_id("cat"), unique_id("cat")
        pid = unique_id()
        await installed(client, manifest(pid, category=mine))
        await installed(client, manifest(unique_id(), category=other))

        assert ids(await listing(client, category=mine)) == [pid]

    async def test_filters_by_tag(self, client) -> None:
        category = unique_id("cat")
        tagged, untagged = unique_id(), unique_id()
        await installed(client, manifest(tagged, category=category, tags=["billing", "eu"]))
        await installed(client, manifest(untagged, category=category, tags=["billing"]))

        assert ids(await listing(client, category=category, tag="eu")) == [tagged]
        assert sorted(ids(await listing(client, category=category, tag="billing"))) == sorted([tagged, untagged])

    async def test_search_matches_id_name_and_description_ignoring_case(self, client) -> None:
        category = unique_id("cat")
        by_id = unique_id("zebra")
        by_name, by_description, neither = unique_id(), unique_id(), unique_id()
        await installed(client, manifest(by_id, category=category))
        await installed(client, {**manifest(by_name, category=category), "name": "Big ZEBRA"})
        await installed(client, manifest(by_description, category=category, description="counts zebras"))
        await installed(client, manifest(neither, category=category, description="counts horses"))

        found = ids(await listing(client, category=category, search="Zebra"))

        assert sorted(found) == sorted([by_id, by_name, by_description])

    async def test_search_treats_like_wildcards_literally(self, client) -> None:
        category = unique_id("cat")
        percent, plain = unique_id(), unique_id()
        await installed(client, manifest(percent, category=category, description="100% uptime"))
        await installed(client, manifest(plain, category=category, description="1000 uptime"))

        assert ids(await listing(client, category=category, search="100%")) == [percent]
        assert ids(await listing(client, category=category, search="0_u")) == []

    async def test_sorts_by_the_named_field_in_either_order(self, client) -> None:
        category = unique_id("cat")
        names = {unique_id(): name for name in ("Charlie", "alpha", "Bravo")}
        for pid, name in names.items():
            await installed(client, {**manifest(pid, category=category), "name": name})
        by_name = sorted(names, key=lambda pid: names[pid])

        ascending = await listing(client, category=category, sort_by="name", sort_order="asc")
        descending = await listing(client, category=category, sort_by="name", sort_order="desc")
        by_id = await listing(client, category=category, sort_by="id")

        assert [item["name"] for item in ascending["items"]] == [names[p] for p in by_name]
        assert ids(descending) == list(reversed(ids(ascending)))
        assert ids(by_id) == sorted(names)

    async def test_sorts_by_installation_time(self, client) -> None:
        category = unique_id("cat")
        order = [unique_id() for _ in range(3)]
        for pid in order:
            await installed(client, manifest(pid, category=category))

        assert ids(await listing(client, category=category, sort_by="installed_at")) == order
        assert ids(await listing(client, category=category, sort_by="installed_at", sort_order="desc")) == order[::-1]

    async def test_sorts_versions_by_precedence_not_as_text(self, client) -> None:
        category = unique_id("cat")
        for version in ("2.0.0", "10.0.0", "9.1.0"):
            await installed(client, manifest(unique_id(), version, category=category))

        page = await listing(client, category=category, sort_by="version")

        assert [item["version"] for item in page["items"]] == ["2.0.0", "9.1.0", "10.0.0"]

    async def test_hides_uninstalled_plugins_unless_asked(self, client) -> None:
        category = unique_id("cat")
        kept, gone = unique_id(), unique_id()
        await installed(client, manifest(kept, category=category))
        await installed(client, manifest(gone, category=category))
        assert (await client.delete(f"{PLUGINS}/{gone}")).status_code == 200

        assert ids(await listing(client, category=category)) == [kept]
        assert ids(await listing(client, category=category, status="uninstalled")) == [gone]
        assert sorted(ids(await listing(client, category=category, include_uninstalled="true"))) == sorted([kept, gone])

    async def test_items_name_their_installed_dependents(self, client) -> None:
        category = unique_id("cat")
        base, child = unique_id("base"), unique_id("child")
        await installed(client, manifest(base, category=category))
        await installed(client, manifest(child, category=category, dependencies={base: ">=1.0"}))

        page = await listing(client, category=category, sort_by="id")

        assert {item["id"]: item["dependents"] for item in page["items"]} == {base: [child], child: []}

    async def test_accepts_a_limit_of_100(self, client) -> None:
        page = await listing(client, limit=100)

        assert page["limit"] == 100
        assert len(page["items"]) <= 100

    async def test_refuses_a_limit_above_100_naming_limit(self, client) -> None:
        response = await client.get(PLUGINS, params={"limit": 101})

        error = assert_error(response, 400, "VALIDATION_FAILED", field="limit")
        assert "100" in error["message"]

    async def test_refuses_a_limit_below_1(self, client) -> None:
        assert_error(await client.get(PLUGINS, params={"limit": 0}), 400, "VALIDATION_FAILED", field="limit")

    async def test_refuses_a_limit_that_is_not_a_number(self, client) -> None:
        assert_error(await client.get(PLUGINS, params={"limit": "ten"}), 400, "VALIDATION_FAILED", field="limit")

    async def test_refuses_a_negative_skip(self, client) -> None:
        assert_error(await client.get(PLUGINS, params={"skip": -1}), 400, "VALIDATION_FAILED", field="skip")

    async def test_refuses_an_unknown_sort_by_listing_the_sortable_fields(self, client) -> None:
        response = await client.get(PLUGINS, params={"sort_by": "password"})

        error = assert_error(response, 400, "VALIDATION_FAILED", field="sort_by")
        assert "name" in error["message"] and "installed_at" in error["message"]

    async def test_refuses_an_unknown_sort_order(self, client) -> None:
        response = await client.get(PLUGINS, params={"sort_order": "sideways"})

        assert_error(response, 400, "VALIDATION_FAILED", field="sort_order")

    async def test_refuses_an_active_only_that_is_not_a_boolean(self, client) -> None:
        response = await client.get(PLUGINS, params={"active_only": "maybe"})

        assert_error(response, 400, "VALIDATION_FAILED", field="active_only")


class TestPluginDetails:
    async def test_shows_the_manifest_and_summary_with_the_version_as_etag(self, client) -> None:
        pid = unique_id()
        declared = manifest(
            pid,
            description="Sends invoices",
            author="Billing team",
            category="finance",
            tags=["billing"],
            capabilities=["INVOICE_SEND"],
            permissions=["invoices:write"],
            events={"emits": ["invoice.sent"], "subscribes": ["order.placed"]},
            homepage="https://example.com/billing",
            license="MIT",
        )
        await installed(client, declared)

        response = await details(client, pid)

        assert response.status_code == 200
        assert response.headers["etag"] == '"1"'
        plugin = response.json()
        assert plugin["id"] == pid
        assert plugin["stream_version"] == 1
        assert plugin["status"] == "installed"
        assert plugin["capabilities"] == ["INVOICE_SEND"]
        assert plugin["events"] == {"emits": ["invoice.sent"], "subscribes": ["order.placed"]}
        for key, value in declared.items():
            assert plugin["manifest"][key] == value, key
        assert plugin["restarts"] == 0 and plugin["reloads"] == 0
        assert plugin["configuration"] == {}

    async def test_lists_the_versions_with_their_sources(self, client) -> None:
        pid = unique_id()
        content = archive(manifest(pid))
        await installed(client, content)

        plugin = await current(client, pid)

        [version] = plugin["versions"]
        assert version["version"] == "1.0.0"
        assert version["source"]["kind"] == "file"
        assert version["source"]["sha256"] == hashlib.sha256(content).hexdigest()
        assert version["source"]["size"] == len(content)
        assert version["installed_at"]
        assert plugin["source"] == version["source"]

    async def test_shows_dependencies_and_dependents(self, client) -> None:
        base, child = unique_id("base"), unique_id("child")
        await installed(client, manifest(base))
        await installed(client, manifest(child, dependencies={base: ">=1.0,<2"}))

        base_view, child_view = await current(client, base), await current(client, child)

        assert base_view["dependents"] == [child]
        assert base_view["dependencies"] == []
        assert child_view["dependencies"] == [{"plugin_id": base, "requirement": ">=1.0,<2"}]
        assert child_view["dependents"] == []

    async def test_etag_follows_every_write(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        write = await client.post(f"{PLUGINS}/{pid}/enable")

        response = await details(client, pid)

        assert response.headers["etag"] == write.headers["etag"] == '"2"'
        assert response.json()["stream_version"] == 2

    async def test_an_unknown_plugin_is_not_found(self, client) -> None:
        pid = unique_id("ghost")

        error = assert_error(await details(client, pid), 404, "PLUGIN_NOT_FOUND")

        assert error["details"]["plugin_id"] == pid


class TestPluginArchives:
    async def test_returns_the_uploaded_zip_bytes_by_sha256(self, client) -> None:
        pid = unique_id()
        content = archive(manifest(pid), **{"plugin/main.py": "print('hello')\n"})
        await installed(client, content)
        digest = hashlib.sha256(content).hexdigest()

        response = await client.get(f"/api/v1/archives/{digest}")

        assert response.status_code == 200
        assert response.content == content
        assert response.headers["content-type"].startswith("application/zip")
        assert response.headers["etag"] == f'"{digest}"'

    async def test_keeps_the_archive_of_every_version(self, client) -> None:
        pid = unique_id()
        first, second = archive(manifest(pid, "1.0.0")), archive(manifest(pid, "2.0.0"))
        await installed(client, first)
        assert (await update(client, pid, second)).status_code == 200

        for content in (first, second):
            response = await client.get(f"/api/v1/archives/{hashlib.sha256(content).hexdigest()}")
            assert response.status_code == 200
            assert response.content == content

    async def test_an_unknown_digest_is_not_found(self, client) -> None:
        digest = hashlib.sha256(unique_id().encode()).hexdigest()

        error = assert_error(await client.get(f"/api/v1/archives/{digest}"), 404, "ARCHIVE_NOT_FOUND")

        assert error["details"]["sha256"] == digest

    async def test_a_digest_that_is_not_sha256_hex_is_refused(self, client) -> None:
        response = await client.get("/api/v1/archives/not-a-digest")

        assert_error(response, 400, "VALIDATION_FAILED", field="sha256")
