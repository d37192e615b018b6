"""Event schema versions: the upcaster registry (domain/upcasting.py), the Plugin events at version 2,
and where stored events take their current shape (infrastructure/eventlog/upcasting.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from uuid import uuid4

import msgspec
import pytest

from application.ports import StoredEvent
from domain.event_schemas import UPCASTERS
from domain.plugins.plugin import SCHEMAS, no_reason_is_none
from domain.upcasting import EventSchemas, MissingUpcaster, Upcasters, UnknownSchemaVersion
from infrastructure.eventlog.upcasting import current, current_json
from tests.unit.test_event_envelope import EVENT, jetstream_body


def renamed_title(payload: dict) -> dict:  # v1 -> v2: "title" became "name"
    payload["name"] = payload.pop("title")
    return payload


def with_tags(payload: dict) -> dict:  # v2 -> v3: a list of tags, empty for older events
    return {**payload, "tags": []}


THING = EventSchemas(
    "Thing", current={"Made": 3}, upcasters={("Made", 1): renamed_title, ("Made", 2): with_tags}
)


class TestTheRegistry:
    def test_an_undeclared_event_is_at_version_1_and_passes_untouched(self) -> None:
        registry = Upcasters([THING])
        payload = {"a": 1}

        assert registry.current("Thing.Broken") == 1
        assert registry.upcast("Thing.Broken", 1, payload) is payload

    def test_a_current_event_is_not_copied(self) -> None:
        payload = {"name": "x", "tags": ["a"]}

        assert Upcasters([THING]).upcast("Thing.Made", 3, payload) is payload

    def test_chains_every_step_from_the_stored_version_to_the_current_one(self) -> None:
        registry = Upcasters([THING])

        assert registry.upcast("Thing.Made", 1, {"title": "x"}) == {"name": "x", "tags": []}
        assert registry.upcast("Thing.Made", 2, {"name": "y"}) == {"name": "y", "tags": []}

    def test_the_stored_payload_is_left_as_it_was(self) -> None:
        stored = {"title": "x"}

        Upcasters([THING]).upcast("Thing.Made", 1, stored)

        assert stored == {"title": "x"}

    def test_a_version_newer_than_the_code_knows_is_an_error_naming_the_event(self) -> None:
        with pytest.raises(UnknownSchemaVersion) as refused:
            Upcasters([THING]).upcast("Thing.Made", 4, {}, "stream thing:1 version 7, position 99")

        assert str(refused.value) == (
            "Thing.Made (stream thing:1 version 7, position 99) has schema version 4;"
            " this version of Charter knows versions 1 to 3"
        )
        assert (refused.value.event_type, refused.value.version) == ("Thing.Made", 4)

    def test_an_event_type_never_versioned_refuses_version_2_too(self) -> None:
        with pytest.raises(UnknownSchemaVersion):
            Upcasters([THING]).upcast("Thing.Broken", 2, {})

    def test_version_0_is_no_version(self) -> None:
        with pytest.raises(UnknownSchemaVersion):
            Upcasters([THING]).upcast("Thing.Made", 0, {})

    def test_a_declared_version_without_every_step_is_refused_at_start_up(self) -> None:
        gap = EventSchemas("Thing", current={"Made": 3}, upcasters={("Made", 1): renamed_title})

        with pytest.raises(MissingUpcaster, match="Thing.Made is at schema version 3 but no upcaster goes from version 2"):
            Upcasters([gap])

    def test_a_step_missing_at_read_time_names_it(self) -> None:
        registry = Upcasters()
        registry.declare("Thing.Made", 3)
        registry.register("Thing.Made", 1, renamed_title)

        with pytest.raises(MissingUpcaster, match="Thing.Made \\(stream s version 1\\): no upcaster from schema version 2"):
            registry.upcast("Thing.Made", 1, {"title": "x"}, "stream s version 1")

    def test_a_step_past_the_current_version_is_refused(self) -> None:
        with pytest.raises(ValueError, match="current version is 1"):
            Upcasters([EventSchemas("Thing", upcasters={("Made", 1): renamed_title})])

    def test_two_steps_from_one_version_are_refused(self) -> None:
        registry = Upcasters([THING])

        with pytest.raises(ValueError, match="a second upcaster from version 1"):
            registry.register("Thing.Made", 1, renamed_title)


class TestPluginEventsAtVersion2:
    def test_disabled_and_uninstalled_are_at_version_2_the_others_at_1(self) -> None:
        assert (UPCASTERS.current("Plugin.Disabled"), UPCASTERS.current("Plugin.Uninstalled")) == (2, 2)
        assert UPCASTERS.current("Plugin.Enabled") == UPCASTERS.current("Site.Created") == 1
        assert SCHEMAS.aggregate == "Plugin"

    def test_v1_no_reason_written_as_empty_text_reads_as_null(self) -> None:
        assert UPCASTERS.upcast("Plugin.Disabled", 1, {"reason": ""}) == {"reason": None}
        assert UPCASTERS.upcast("Plugin.Uninstalled", 1, {"reason": "", "forced": True, "cleanup_data": False}) == {
            "reason": None, "forced": True, "cleanup_data": False,
        }

    def test_a_v1_reason_given_is_kept(self) -> None:
        assert no_reason_is_none({"reason": "incident 42"}) == {"reason": "incident 42"}


def stored(event_type: str, version: int, payload: dict) -> StoredEvent:
    return StoredEvent(
        position=12, transaction_id=800, event_id=uuid4(), stream_id="plugin:hello", stream_type="plugin",
        stream_version=4, event_type=event_type, schema_version=version, payload=payload, metadata={},
        site_id=None, recorded_at=datetime(2026, 1, 2, tzinfo=timezone.utc), hash=b"h" * 32,
    )


class TestReadingTheLog:
    def test_a_current_stored_event_is_handed_on_as_it_is(self) -> None:
        event = stored("Plugin.Disabled", 2, {"reason": None})

        assert current(event) is event

    def test_an_old_stored_event_is_handed_on_at_the_current_version_with_its_hash(self) -> None:
        event = stored("Plugin.Disabled", 1, {"reason": ""})

        upcast = current(event)

        assert (upcast.schema_version, upcast.payload, upcast.hash) == (2, {"reason": None}, event.hash)
        assert event.payload == {"reason": ""}  # the stored record is untouched

    def test_an_event_from_newer_code_names_its_stream_version_and_position(self) -> None:
        with pytest.raises(UnknownSchemaVersion, match=r"Plugin.Disabled \(stream plugin:hello version 4, position 12\)"):
            current(stored("Plugin.Disabled", 3, {"reason": None}))

    def test_stored_json_of_a_current_event_is_passed_through_untouched(self) -> None:
        text = '{"reason": null}'

        assert current_json("Plugin.Disabled", 2, text, "plugin:hello", 4, 12) == (2, text)

    def test_stored_json_of_an_old_event_is_upcast_with_credentials_still_withheld(self) -> None:
        version, text = current_json("Plugin.Disabled", 1, '{"reason": ""}', "plugin:hello", 4, 12)

        assert (version, msgspec.json.decode(text)) == (2, {"reason": None})

    def test_the_relay_and_the_event_log_publish_an_old_event_in_its_current_shape(self) -> None:
        from projections import event_log

        old = dict(EVENT, event_type="Plugin.Disabled", schema_version=1, payload='{"reason": ""}')
        new = dict(EVENT, event_type="Plugin.Disabled", schema_version=2, payload='{"reason":null}')

        assert jetstream_body(old) == jetstream_body(new)
        assert msgspec.json.encode(event_log.envelope(dict(old))) == jetstream_body(new)
