"""The User aggregate (a random id that says nothing about the person) and the reservation of its e-mail
address (one stream per keyed hash of the address, so an address can be registered only once)."""

from __future__ import annotations

import hashlib
import hmac
import re
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.identity.access import ADMIN_ROLE, Grant, check_role_name, check_site_id
from domain.identity.errors import InvalidEmail, GrantNotHeld

STREAM_TYPE = "user"
EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,255}$")


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL.fullmatch(email):
        raise InvalidEmail(f"email {email!r} is not an e-mail address", field="email")
    return email


RESERVATION_STREAM = "email"


def email_digest(key: bytes, email: str) -> str:
    """The key of an address's reservation stream: HMAC-SHA256 with a server key of the normalised
    address, so neither the stream id nor a user id can be computed (or confirmed) from an e-mail."""
    return hmac.new(key, normalise_email(email).encode(), hashlib.sha256).hexdigest()


class EmailReservation(Aggregate):
    """An e-mail address taken by one user: appended with the user's registration, all or none."""

    @staticmethod
    def create_id(digest: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"charter:email:{digest}")

    @event("Reserved")
    def __init__(self, digest: str, user_id: str) -> None:
        self.digest = digest
        self.user_id = user_id


# Payload fields of user events that stay in the log: kept for signing in, never published to
# JetStream or SSE and never listed by the event log API.
WITHHELD_FIELDS = ("password_hash",)


class User(Aggregate):
    """A person who signs in. Password hashes come from the application (never a clear password).
    Its id is random (uuid4, the aggregate default): ids can be shown without revealing an address."""

    @event("Registered")
    def __init__(self, email: str, full_name: str, password_hash: str, active: bool) -> None:
        self.email = email
        self.full_name = full_name
        self.password_hash = password_hash
        self.active = active
        self.grants: list[Grant] = []

    @property
    def holds_global_role(self) -> bool:
        return any(g.site_id is None for g in self.grants)

    @property
    def is_admin(self) -> bool:
        """An active holder of `admin` granted everywhere (who the admin registry counts)."""
        return self.active and Grant(ADMIN_ROLE, None) in self.grants

    def activate(self) -> bool:
        if self.active:
            return False
        self._activated()
        return True

    @event("Activated")
    def _activated(self) -> None:
        self.active = True

    def deactivate(self, reason: str | None) -> bool:
        if not self.active:
            return False
        self._deactivated(reason=reason or "")
        return True

    @event("Deactivated")
    def _deactivated(self, reason: str) -> None:
        self.active = False

    def change_password(self, password_hash: str) -> None:
        self._password_changed(password_hash=password_hash)

    @event("PasswordChanged")
    def _password_changed(self, password_hash: str) -> None:
        self.password_hash = password_hash

    def grant_role(self, role: str, site_id: str | None) -> bool:
        """Record RoleGranted; False when the user already holds that grant."""
        check_role_name(role)
        if site_id is not None:
            check_site_id(site_id)
        if Grant(role, site_id) in self.grants:
            return False
        self._role_granted(role=role, site_id=site_id)
        return True

    @event("RoleGranted")
    def _role_granted(self, role: str, site_id: str | None) -> None:
        self.grants.append(Grant(role, site_id))

    def revoke_role(self, role: str, site_id: str | None) -> None:
        if Grant(role, site_id) not in self.grants:
            where = f" at site {site_id}" if site_id else ""
            raise GrantNotHeld(f"user {self.email} does not hold role {role}{where}", role=role, site_id=site_id)
        self._role_revoked(role=role, site_id=site_id)

    @event("RoleRevoked")
    def _role_revoked(self, role: str, site_id: str | None) -> None:
        self.grants.remove(Grant(role, site_id))
