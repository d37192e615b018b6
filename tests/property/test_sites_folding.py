"""The `sites` read model folds a batch of any size to the rows of one event at a time.

Random sequences on two sites and three plugins (activations, reconfigurations, forced and plain
deactivations, signoffs, renames, retirements, and the plugins' kill switches) are recorded by the
aggregates (a refused operation records nothing), then written in batches of every size, each batch
reading only the groups its `needs` names, with and without a rebuild's row cache."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.plugins.manifest import parse_manifest
from domain.sites.extensions import ExtensionRules
from domain.sites.policies import Candidate
from domain.sites.site import Site
from projections.sites.projection import SitesProjection
from tests.batch_kit import Log, fold_in_batches, tables

SITES = ["plant-1", "plant-2"]
PLUGINS = ["base", "erp", "mes"]
ASPECTS = {"aspects": [{"name": "esig", "role": "quality-focal", "meaning": "Approved"}]}


def hash_of(n: int) -> str:
    return f"sha256:{n % 4:064x}"


def rules(plugin_id: str) -> ExtensionRules:
    extra: dict[str, Any] = {"erp": {"dependencies": {"base": ">=1.0"}}, "mes": {"compliance": ASPECTS}}.get(plugin_id, {})
    return ExtensionRules.of(parse_manifest({"id": plugin_id, "name": "X", "version": "1.0", **extra}))


def _activate(site: Site, pid: str, n: int) -> None:
    site.activate(Candidate(pid, "1.0", "1.0", True, rules(pid), hash_of(n)), {"level": n, "token": {"$sealed": f"c{n}"}})


SITE_ACTIONS = {
    "activate": _activate,
    "reconfigure": lambda s, pid, n: s.reconfigure(pid, {"level": n}, hash_of(n), ["level"], f"r{n}"),
    "deactivate": lambda s, pid, n: s.deactivate(pid, f"d{n}", forced=n % 2 == 1),
    "sign": lambda s, pid, n: s.record_signoff(pid, rules(pid).compliance, "esig", f"u{n}", "U", "", hash_of(n), "2024-11-01T10:00:00+00:00"),
    "rename": lambda s, pid, n: s.rename(f"Plant {n}"),
    "retire": lambda s, pid, n: s.retire("closed") if n == 5 else None,  # rarely: a retired site refuses the rest
}
PLUGIN_ACTIONS = {
    "disable": lambda p, n: p.disable(f"incident {n}"),
    "enable": lambda p, n: p.enable("ok"),
}

site_ops = st.tuples(st.sampled_from(sorted(SITE_ACTIONS)), st.integers(0, 1), st.sampled_from(PLUGINS), st.integers(0, 5))
plugin_ops = st.tuples(st.sampled_from(sorted(PLUGIN_ACTIONS)), st.just(0), st.sampled_from(PLUGINS), st.integers(0, 5))


def play(operations: list[tuple[str, int, str, int]]) -> Log:
    log = Log()
    for pid in PLUGINS:
        log.install(pid, enabled=True)
    for name, i, pid, n in operations:
        if name in PLUGIN_ACTIONS:
            log.act("plugin", pid, lambda p, f=PLUGIN_ACTIONS[name], n=n: f(p, n))
            continue
        if log.aggregate("site", SITES[i]) is None:
            log.record("site", SITES[i], Site.create(SITES[i], SITES[i].title()))
        log.act("site", SITES[i], lambda s, f=SITE_ACTIONS[name], pid=pid, n=n: f(s, pid, n))
    return log


@settings(max_examples=150, deadline=None)
@given(operations=st.lists(st.one_of(site_ops, plugin_ops), min_size=1, max_size=50), size=st.integers(1, 20))
def test_any_batch_size_folds_to_the_rows_of_one_event_at_a_time(operations: list[tuple[str, int, str, int]], size: int) -> None:
    events = play(operations).events
    projection = SitesProjection()
    one_at_a_time = tables(fold_in_batches(projection, events, 1))

    assert tables(fold_in_batches(projection, events, size)) == one_at_a_time
    assert tables(fold_in_batches(projection, events, size, cache=True)) == one_at_a_time
