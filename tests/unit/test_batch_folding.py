"""Projections fold events into row changes without a database: events in, changes per table out."""

from __future__ import annotations

import pytest

from projections.batch import NotLoaded, RowCache, Rows, Table
from projections.identity.projection import AccessProjection
from projections.plugins.projection import PluginsProjection
from tests.batch_kit import Log, fold_whole, manifest, tables

ITEMS = Table("items", ("group_id", "item"))


def changes_of(projection, log: Log, start: int = 0):  # type: ignore[no-untyped-def]
    """The changes the events from `start` make, over the rows the earlier events left."""
    state = fold_whole(projection, log.events[:start])
    rows = Rows.complete(projection.tables, state)
    return projection.fold(rows, log.events[start:])


class TestRows:
    def test_reading_a_group_the_batch_did_not_load_is_refused(self) -> None:
        rows = Rows([ITEMS], {"items": [{"group_id": "a", "item": 1}]}, {"items": {"a"}})
        assert rows.get("items", "a", 1) == {"group_id": "a", "item": 1}
        with pytest.raises(NotLoaded):
            rows.get("items", "b", 1)

    def test_updating_a_missing_row_changes_nothing(self) -> None:
        rows = Rows([ITEMS], {}, {"items": {"a"}})
        assert rows.update("items", "a", 1, size=3) is None
        assert rows.changes() == {}

    def test_a_cleared_group_is_known_empty_and_its_new_rows_are_upserted_after_the_clear(self) -> None:
        rows = Rows([ITEMS], {}, {})
        rows.clear("items", "g")
        assert rows.group("items", "g") == []
        rows.put("items", {"group_id": "g", "item": 2, "size": 1})
        change = rows.changes()["items"]
        assert change.cleared == ["g"]
        assert change.upserted == [{"group_id": "g", "item": 2, "size": 1}]
        assert change.deleted == [] and change.updated == {}

    def test_an_existing_row_sends_only_the_columns_the_batch_changed(self) -> None:
        rows = Rows([ITEMS], {"items": [{"group_id": "a", "item": 1, "size": 1, "colour": "red", "note": "x"}]}, {"items": {"a"}})
        rows.update("items", "a", 1, size=2)
        rows.update("items", "a", 1, colour="blue")
        assert rows.changes()["items"].updated == {
            ("group_id", "item", "colour", "size"): [{"group_id": "a", "item": 1, "colour": "blue", "size": 2}]
        }

    def test_a_row_put_then_deleted_in_one_batch_is_only_deleted(self) -> None:
        rows = Rows([ITEMS], {}, {"items": {"a"}})
        rows.put("items", {"group_id": "a", "item": 1})
        rows.delete("items", "a", 1)
        change = rows.changes()["items"]
        assert change.upserted == [] and change.deleted == [("a", 1)]


class TestRowCache:
    def test_a_cached_group_takes_the_rows_a_later_batch_put_or_deleted_without_loading_it(self) -> None:
        cache = RowCache([ITEMS])
        first = Rows([ITEMS], {"items": [{"group_id": "g", "item": 1}, {"group_id": "g", "item": 2}]}, {"items": {"g"}})
        cache.keep(first)
        blind = Rows([ITEMS], {}, {})  # a batch that writes into g without reading it
        blind.put("items", {"group_id": "g", "item": 3})
        blind.delete("items", "g", 1)
        cache.keep(blind)

        cached, missing = cache.take({"items": {"g", "h"}})

        assert sorted(r["item"] for r in cached["items"]) == [2, 3]
        assert missing == {"items": {"h"}}

    def test_the_least_recently_used_groups_go_past_the_limit(self) -> None:
        cache = RowCache([ITEMS], limit=2)
        for group in ("a", "b", "c"):
            cache.keep(Rows([ITEMS], {"items": [{"group_id": group, "item": 1}]}, {"items": {group}}))

        _, missing = cache.take({"items": {"a", "b", "c"}})

        assert missing == {"items": {"a"}}

    def test_a_fresh_cache_loads_only_groups_it_wrote_and_let_go(self) -> None:
        cache = RowCache([ITEMS], limit=2)
        cache.fresh = True  # its build began with empty tables
        first = Rows([ITEMS], {}, {})
        first.put("items", {"group_id": "a", "item": 1})  # written without reading: "a" was empty
        cache.keep(first)
        for group in ("b", "c"):  # "a" goes past the limit
            cache.keep(Rows([ITEMS], {"items": [{"group_id": group, "item": 1}]}, {"items": {group}}))

        cached, missing = cache.take({"items": {"a", "c", "never-written"}})

        assert missing == {"items": {"a"}}  # written and let go: in the database only
        assert [r["group_id"] for r in cached["items"]] == ["c"]

    def test_a_group_a_fresh_cache_first_wrote_blind_is_kept_whole(self) -> None:
        cache = RowCache([ITEMS])
        cache.fresh = True
        blind = Rows([ITEMS], {}, {})
        blind.put("items", {"group_id": "g", "item": 1})
        blind.put("items", {"group_id": "g", "item": 2})
        cache.keep(blind)

        cached, missing = cache.take({"items": {"g"}})

        assert missing == {} and sorted(r["item"] for r in cached["items"]) == [1, 2]

    def test_a_cache_not_fresh_loads_every_group_it_does_not_hold(self) -> None:
        cache = RowCache([ITEMS])  # a resumed build: rows written by an earlier run are unknown to it
        blind = Rows([ITEMS], {}, {})
        blind.put("items", {"group_id": "g", "item": 1})
        cache.keep(blind)

        _, missing = cache.take({"items": {"g", "h"}})

        assert missing == {"items": {"g", "h"}}


class TestPluginsFold:
    def test_an_install_upserts_the_plugin_its_first_version_and_its_dependencies(self) -> None:
        log = Log()
        log.install("web", "1.2.0", depends_on="base", enabled=True)

        changes = changes_of(PluginsProjection(), log)

        (plugin,) = changes["plugins"].upserted
        assert (plugin["plugin_id"], plugin["version"], plugin["status"], plugin["enabled"]) == ("web", "1.2.0", "enabled", True)
        assert plugin["version_key"][:3] == [1, 2, 0] and (plugin["restarts"], plugin["reloads"]) == (0, 0)
        assert [(v["plugin_id"], v["seq"], v["version"]) for v in changes["plugin_versions"].upserted] == [("web", 1, "1.2.0")]
        assert plugin["manifest_seq"] == 1 and "manifest" not in plugin  # the manifest is kept once, with its version
        deps = changes["plugin_dependencies"]
        assert deps.cleared == ["web"]
        assert deps.upserted == [{"plugin_id": "web", "depends_on": "base", "requirement": ">=1.0"}]

    def test_many_restarts_in_one_batch_are_one_write_of_the_whole_small_row(self) -> None:
        log = Log()
        log.install("web")
        for _ in range(5):
            log.act("plugin", "web", lambda p: p.restart(None))

        changes = changes_of(PluginsProjection(), log, start=1)

        assert set(changes) == {"plugins"}
        assert changes["plugins"].updated == {}  # plugin rows are sent whole (their manifests are elsewhere)
        (row,) = changes["plugins"].upserted
        assert row["restarts"] == 5 and row["stream_version"] == 6 and row["version"] == "1.0.0"

    def test_a_table_of_large_rows_sends_only_the_columns_a_batch_changed(self) -> None:
        big = Table("big", ("id",))
        rows = Rows([big], {"big": [{"id": 1, "blob": "x" * 1000, "n": 0}]}, {"big": {1}})
        rows.update("big", 1, n=1)

        assert rows.changes()["big"].updated == {("id", "n"): [{"id": 1, "n": 1}]}
        assert Rows([Table("big", ("id",), whole_rows=True)], {"big": [{"id": 1, "n": 0}]}, {"big": {1}}).changes() == {}

    def test_a_rollback_restores_the_earlier_manifest_and_its_dependencies(self) -> None:
        log = Log()
        log.install("web", "1.0.0", depends_on="base")
        log.act("plugin", "web", lambda p: p.update(manifest("web", "2.0.0", "other"), {"kind": "u"}, {}))
        log.act("plugin", "web", lambda p: p.roll_back(None, {"level": 7}))

        state = tables(fold_whole(PluginsProjection(), log.events))

        (plugin,) = state["plugins"]
        assert (plugin["version"], plugin["config"], plugin["source"]) == ("1.0.0", {"level": 7}, {"kind": "t"})
        assert [d["depends_on"] for d in state["plugin_dependencies"]] == ["base"]
        assert [v["version"] for v in state["plugin_versions"]] == ["1.0.0", "2.0.0"]
        current = next(v for v in state["plugin_versions"] if v["seq"] == plugin["manifest_seq"])
        assert current["version"] == "1.0.0" and current["manifest"]["dependencies"] == {"base": ">=1.0"}

    def test_an_uninstall_keeps_the_row_and_drops_the_dependencies(self) -> None:
        log = Log()
        log.install("web", depends_on="base")
        log.act("plugin", "web", lambda p: p.uninstall("bye", forced=True, cleanup_data=True))

        state = tables(fold_whole(PluginsProjection(), log.events))

        assert [(p["status"], p["enabled"], p["config"]) for p in state["plugins"]] == [("uninstalled", False, {})]
        assert "plugin_dependencies" not in state

    def test_events_of_other_streams_change_nothing(self) -> None:
        log = Log()
        log.register("ann")
        assert changes_of(PluginsProjection(), log) == {}


class TestAccessFold:
    def test_a_repeated_grant_keeps_the_first_and_a_revoke_deletes_it(self) -> None:
        log = Log()
        log.register("ann")
        log.act("user", "ann", lambda u: u.grant_role("ops", "site-1"))
        first = tables(fold_whole(AccessProjection(), log.events))["user_grants"]
        log.act("user", "ann", lambda u: u.revoke_role("ops", "site-1"))

        changes = changes_of(AccessProjection(), log, start=2)

        assert [(g["role_key"], g["site_id"]) for g in first] == [("ops", "site-1")]
        assert changes["user_grants"].deleted == [("ann", "ops", "site-1")]
        assert changes["users"].updated  # grants_changed_at moved

    def test_role_permissions_stay_sorted_and_unique(self) -> None:
        log = Log()
        log.create_role("tinkerer", ["plugins:write"])
        log.act("role", "tinkerer", lambda r: r.add_permission("events:read"))
        log.act("role", "tinkerer", lambda r: r.remove_permission("plugins:write"))
        log.act("role", "tinkerer", lambda r: r.add_permission("plugins:read"))

        (role,) = tables(fold_whole(AccessProjection(), log.events))["roles"]

        assert role["permissions"] == ["events:read", "plugins:read"]

    def test_a_permission_defined_twice_keeps_its_first_definition(self) -> None:
        log = Log()
        log.define("plugins:read")
        log.define("plugins:read")

        (permission,) = tables(fold_whole(AccessProjection(), log.events))["permissions"]

        assert permission["defined_at"] == log.events[0].recorded_at
