"""Folding a batch of any size gives the rows folding its events one at a time gives.

Random sequences of domain operations (installs, updates, rollbacks, the kill switch, uninstalls and
reinstalls on a few plugins; registrations, grants, revokes and role edits) are recorded by the
aggregates, then written by each projection in batches of every size, the way the database sees them:
each batch loads only the groups its `needs` names (a fold reading anything else fails), and its net
changes (cleared groups, deleted keys, upserted rows, updated columns) are applied to the tables. A
rebuild's row cache, kept small so groups come and go, must not change the outcome either.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.identity.projection import AccessProjection
from projections.plugins.projection import PluginsProjection
from tests.batch_kit import Log, fold_in_batches, fold_whole, tables

PLUGINS = ["alpha", "beta", "gamma"]
USERS = ["ann", "bob"]
ROLES = ["watcher", "tinkerer"]  # not built-in: every edit applies
PERMISSIONS = ["plugins:read", "plugins:write", "events:read"]
SITES = [None, "site-1"]

plugin_ops = st.tuples(
    st.sampled_from(["install", "update", "roll_back", "enable", "disable", "restart", "reload", "configure", "uninstall"]),
    st.sampled_from(PLUGINS),
    st.integers(0, 3),
)
identity_ops = st.tuples(
    st.sampled_from(["register", "activate", "deactivate", "password", "grant", "revoke", "create_role", "rename",
                     "add", "remove", "delete_role", "define"]),  # fmt: skip
    st.integers(0, 1),
    st.integers(0, 2),
)


def play(operations: list[tuple[str, Any, int]]) -> Log:
    """Record the operations; one on a plugin, user or role that does not exist yet creates it first,
    so most operations record something."""
    log = Log()
    for name, target, n in operations:
        if name in PLUGIN_ACTIONS:
            if log.aggregate("plugin", target) is None:
                log.install(target)
            PLUGIN_ACTIONS[name](log, target, n)
            continue
        if name in USER_ACTIONS and log.aggregate("user", USERS[target]) is None:
            log.register(USERS[target])
        if name in ROLE_ACTIONS and log.aggregate("role", ROLES[target]) is None:
            log.create_role(ROLES[target], PERMISSIONS[:1])
        IDENTITY_ACTIONS[name](log, target, n)
    return log


def _update(log: Log, pid: str, n: int) -> None:
    from tests.batch_kit import manifest

    depends_on = PLUGINS[(PLUGINS.index(pid) + 1) % len(PLUGINS)] if n % 2 else None
    log.act("plugin", pid, lambda p: p.update(manifest(pid, f"1.{n + 1}.{len(log.events)}", depends_on, ("t", str(n))),
                                              {"kind": "u", "n": n}, {"level": n}))  # fmt: skip


def _roll_back(log: Log, pid: str, n: int) -> None:
    """Back to the version before (after an update first, when there is none yet)."""
    if len(log.aggregate("plugin", pid).versions) < 2:
        _update(log, pid, n)
    log.act("plugin", pid, lambda p: p.roll_back(None, {"level": -n}))


def _revoke(log: Log, i: int, n: int) -> None:
    """Revoke a grant the user holds (granting one first, when there is none)."""
    if not log.aggregate("user", USERS[i]).grants:
        IDENTITY_ACTIONS["grant"](log, i, n)
    log.act("user", USERS[i], lambda u: u.revoke_role(u.grants[-1].role, u.grants[-1].site_id))


PLUGIN_ACTIONS = {
    "install": lambda log, pid, n: log.install(pid, "1.0.0", PLUGINS[n % len(PLUGINS)] if n else None, enabled=n % 2 == 0),
    "update": _update,
    "roll_back": lambda log, pid, n: _roll_back(log, pid, n),
    "enable": lambda log, pid, n: log.act("plugin", pid, lambda p: p.enable("ok")),
    "disable": lambda log, pid, n: log.act("plugin", pid, lambda p: p.disable(f"incident {n}")),
    "restart": lambda log, pid, n: log.act("plugin", pid, lambda p: p.restart(None)),
    "reload": lambda log, pid, n: log.act("plugin", pid, lambda p: p.reload(None)),
    "configure": lambda log, pid, n: log.act("plugin", pid, lambda p: p.configure({"level": n}, ["level"])),
    "uninstall": lambda log, pid, n: log.act("plugin", pid, lambda p: p.uninstall("bye", forced=True, cleanup_data=n % 2 == 0)),
}
IDENTITY_ACTIONS = {
    "register": lambda log, i, n: log.register(USERS[i], active=n != 0),
    "activate": lambda log, i, n: log.act("user", USERS[i], lambda u: u.activate()),
    "deactivate": lambda log, i, n: log.act("user", USERS[i], lambda u: u.deactivate("left")),
    "password": lambda log, i, n: log.act("user", USERS[i], lambda u: u.change_password(f"hash-{n}")),
    "grant": lambda log, i, n: log.act("user", USERS[i], lambda u: u.grant_role(ROLES[n % 2], SITES[n // 2 % 2])),
    "revoke": lambda log, i, n: _revoke(log, i, n),
    "create_role": lambda log, i, n: log.create_role(ROLES[i], PERMISSIONS[: n + 1]),
    "rename": lambda log, i, n: log.act("role", ROLES[i], lambda r: r.rename(f"{ROLES[i]}-{n}")),
    "add": lambda log, i, n: log.act("role", ROLES[i], lambda r: r.add_permission(PERMISSIONS[2 - n])),
    "remove": lambda log, i, n: log.act("role", ROLES[i], lambda r: r.remove_permission(PERMISSIONS[n])),
    "delete_role": lambda log, i, n: log.act("role", ROLES[i], lambda r: r.delete()),
    "define": lambda log, i, n: log.define(PERMISSIONS[n]),
}

USER_ACTIONS = {"activate", "deactivate", "password", "grant", "revoke"}
ROLE_ACTIONS = {"rename", "add", "remove", "delete_role"}

sequences = st.lists(st.one_of(plugin_ops, identity_ops), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(operations=sequences, size=st.integers(1, 25))
def test_any_batch_size_folds_to_the_rows_of_one_event_at_a_time(operations: list[tuple[str, Any, int]], size: int) -> None:
    events = play(operations).events
    for projection in (PluginsProjection(), AccessProjection()):
        one_at_a_time = tables(fold_in_batches(projection, events, 1))
        assert tables(fold_in_batches(projection, events, size)) == one_at_a_time, projection.name
        assert tables(fold_in_batches(projection, events, size, cache=True)) == one_at_a_time, projection.name
        assert tables(fold_in_batches(projection, events, size, cache=True, fresh=True)) == one_at_a_time, projection.name
        assert tables(fold_whole(projection, events)) == one_at_a_time, projection.name


def test_the_sequences_reach_every_event_type_the_projections_handle() -> None:
    """The operations above are rich enough to matter: a fixed long run records every event type."""
    operations = [(name, PLUGINS[i % 3], i % 4) for i in range(12) for name in PLUGIN_ACTIONS]
    operations += [(name, i % 2, i % 3) for i in range(12) for name in IDENTITY_ACTIONS]
    types = {e.event_type for e in play(operations).events}
    assert {"Plugin.Installed", "Plugin.Updated", "Plugin.RolledBack", "Plugin.Uninstalled", "Plugin.Reinstalled",
            "Plugin.Enabled", "Plugin.Disabled", "Plugin.Restarted", "Plugin.Reloaded", "Plugin.ConfigurationChanged",
            "User.Registered", "User.RoleGranted", "User.RoleRevoked", "User.Deactivated", "User.Activated",
            "User.PasswordChanged", "Role.Created", "Role.Renamed", "Role.PermissionAdded", "Role.PermissionRemoved",
            "Role.Deleted", "Permission.Defined"} <= types  # fmt: skip
