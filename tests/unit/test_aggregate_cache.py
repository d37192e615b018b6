"""The aggregate cache's copies and bounds, without a database: a clone shares nothing that can change
with what it was copied from, and the cache keeps the newest entry of a stream, at most `size` streams."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from domain.plugins.manifest import Manifest
from domain.sites.extensions import ActiveExtension, ExtensionRules
from domain.sites.policies import Candidate
from domain.sites.site import Site
from infrastructure.eventlog.aggregate_cache import AggregateCache, Entry, clone, clone_aggregate


class Mutable(msgspec.Struct):
    items: list[int]


@dataclass(frozen=True)
class Value:
    name: str


def site_with(extensions: int) -> Site:
    site = Site.create("plant-1", "Plant")
    for n in range(extensions):
        rules = ExtensionRules(capabilities=[f"cap-{n}"])
        site._extension_activated(site_id="plant-1", plugin_id=f"ext-{n}", version="1.0.0", configuration={"level": n},
                                  configuration_hash="sha256:" + "0" * 64, rules=rules.to_dict(), signoffs=[], reason="")
    site.collect_events()
    return site


def test_a_clone_copies_containers_and_mutable_objects_and_shares_values() -> None:
    frozen = ActiveExtension("ext", "1.0.0", {}, "h", ExtensionRules())
    original = {"list": [1, [2]], "set": {3}, "tuple": ([4],), "mutable": Mutable([5]), "frozen": frozen,
                "value": Value("v")}
    twin = clone(original)

    assert twin == original
    twin["list"][1].append(9)
    twin["set"].add(9)
    twin["tuple"][0].append(9)
    twin["mutable"].items.append(9)
    assert original == {"list": [1, [2]], "set": {3}, "tuple": ([4],), "mutable": Mutable([5]), "frozen": frozen,
                        "value": Value("v")}
    assert twin["frozen"] is frozen and twin["value"] is original["value"]


def test_deciding_on_a_cloned_site_leaves_the_original_as_it_was() -> None:
    site = site_with(3)
    twin = clone_aggregate(site)
    manifest = msgspec.convert({"id": "ext-new", "name": "New", "version": "1.0.0"}, Manifest)
    candidate = Candidate("ext-new", "1.0.0", "1.0.0", True, ExtensionRules.of(manifest), "sha256:" + "1" * 64)

    twin.activate(candidate, {})
    twin.rename("Other name")

    assert set(site.extensions) == {"ext-0", "ext-1", "ext-2"} and site.name == "Plant"
    assert site.version == 4 and not site.pending_events
    assert len(twin.pending_events) == 2 and twin.version == 6


def test_the_cache_keeps_the_newest_entry_of_a_stream_and_at_most_size_streams() -> None:
    cache = AggregateCache(2)
    cache.put("a", Entry(5, b"5", "a5"))
    cache.put("a", Entry(3, b"3", "a3"))  # a slower load of an older version does not replace it
    assert cache.get("a").version == 5
    cache.put("b", Entry(1, b"1", "b"))
    cache.get("a")  # used last: "b" is now the least recently used
    cache.put("c", Entry(1, b"1", "c"))
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = AggregateCache(0)
    cache.put("a", Entry(5, b"5", "a5"))
    assert cache.get("a") is None and len(cache) == 0
