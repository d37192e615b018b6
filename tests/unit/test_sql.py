"""projections/sql.py: the WHERE, LIKE and ORDER BY builders every query module uses (no database)."""

from __future__ import annotations

import pytest

from projections.sql import Where, contains, order_by


class TestWhere:
    def test_no_condition_is_no_where_clause(self) -> None:
        assert (Where().sql, Where().args) == ("", [])

    def test_numbers_each_value_in_turn_and_joins_with_and(self) -> None:
        where = Where().add("status = {}", "enabled").add("enabled").add("{} = ANY(tags)", "audit")

        assert where.sql == " WHERE status = $1 AND enabled AND $2 = ANY(tags)"
        assert where.args == ["enabled", "audit"]

    def test_one_value_can_be_used_twice(self) -> None:
        where = Where().add("is_active = {}", True).add("(email ILIKE {0} OR full_name ILIKE {0})", "%a%")

        assert where.sql == " WHERE is_active = $1 AND (email ILIKE $2 OR full_name ILIKE $2)"
        assert where.args == [True, "%a%"]

    def test_a_value_never_becomes_sql_text(self) -> None:
        hostile = "x' OR '1'='1 {} $1"

        where = Where().add("name = {}", hostile)

        assert where.sql == " WHERE name = $1" and where.args == [hostile]


class TestContains:
    @pytest.mark.parametrize(
        ("text", "pattern"),
        [("plain", "%plain%"), ("100%", "%100\\%%"), ("a_b", "%a\\_b%"), ("back\\slash", "%back\\\\slash%")],
    )
    def test_matches_the_text_literally_anywhere(self, text: str, pattern: str) -> None:
        assert contains(text) == pattern


class TestOrderBy:
    def test_direction_then_the_unique_tiebreak(self) -> None:
        assert order_by("name", False, "plugin_id") == "name ASC, plugin_id"
        assert order_by("position", True) == "position DESC"
