"""The plugins and sites `charter bench sites` works with: manifests carrying site rules, and the order
in which a site activates them (dependencies first)."""

from __future__ import annotations

from typing import Any

TIERS = 3  # tier 0 depends on nothing, tier 1 on tier 0, tier 2 on tiers 0 and 1
SPARES = 150  # plugins per site that (b) may activate there (default of --spares)
SITES_PER_CLIENT = 4  # default of --sites: each client activates at 4 sites in turn, so each grows less
SCHEMA = {
    "type": "object",
    "properties": {"level": {"type": "integer", "minimum": 0, "maximum": 100}, "mode": {"enum": ["fast", "safe"]}},
    "additionalProperties": False,
}
SOURCE = {"kind": "bench"}


def base_id(index: int) -> str:
    return f"base-{index:04d}"


def spare_id(site: int, k: int) -> str:
    return f"spare-{site}-{k}"


def site_id(site: int) -> str:
    return f"bench-site-{site}"


def tiers(count: int) -> list[range]:
    """The base plugins in dependency tiers: 1/4 in tier 0, 1/4 in tier 1, the rest in tier 2."""
    first, second = max(1, count // 4), max(1, count // 4)
    return [range(0, first), range(first, min(count, first + second)), range(min(count, first + second), count)]


def configuration(n: int) -> dict[str, Any]:
    return {"level": n % 100, "mode": "safe" if n % 2 else "fast"}


def manifest(plugin_id: str, capability: str, dependencies: dict[str, str], recommends: dict[str, str]) -> dict[str, Any]:
    return {
        "id": plugin_id,
        "name": plugin_id.replace("-", " ").title(),
        "version": "1.2.0",
        "description": f"Benchmark extension {plugin_id}",
        "capabilities": [capability, f"family-{len(plugin_id) % 8}"],
        "exclusive_capabilities": [capability],
        "dependencies": dependencies,
        "conflicts": [{"id": f"retired-{plugin_id}", "versions": "<1.0", "reason": "replaced by this one"}],
        "recommends": recommends,
        "config_schema": SCHEMA,
    }


def base_manifest(index: int, count: int) -> dict[str, Any]:
    zero, one, _ = tiers(count)
    deps: dict[str, str] = {}
    if index >= zero.stop:
        deps[base_id(zero[index % len(zero)])] = ">=1.0,<2"
    if index >= one.stop and len(one):
        deps[base_id(one[index % len(one)])] = ">=1.1"
    recommends = {base_id((index + 1) % count): ">=1.0"} if count > 1 else {}
    return manifest(base_id(index), f"cap-{index}", deps, recommends)


def spare_manifest(site: int, k: int, count: int) -> dict[str, Any]:
    zero, _, two = tiers(count)
    deps = {base_id(zero[(site + k) % len(zero)]): ">=1.0"}
    if len(two):
        deps[base_id(two[(site * 31 + k) % len(two)])] = ">=1.2"
    return manifest(spare_id(site, k), f"spare-cap-{site}-{k}", deps, {base_id(0): ">=1.0"})


def install_manifest(n: int) -> dict[str, Any]:
    """What phase (a) installs: site rules and a schema as the others, no dependencies."""
    return manifest(f"fresh-{n}", f"fresh-cap-{n}", {}, {base_id(0): ">=1.0"})


def activation_order(site: int, count: int) -> list[int]:
    """Every base plugin, tier by tier; within a tier each site starts elsewhere, so sites set up side by
    side seldom append to one plugin's activation registry at the same moment."""
    order = []
    for tier in tiers(count):
        shift = (site * 17) % len(tier) if len(tier) else 0
        order += [tier[(i + shift) % len(tier)] for i in range(len(tier))]
    return order
