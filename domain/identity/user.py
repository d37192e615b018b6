"""The User aggregate (a random id that says nothing about the person) and the reservation of its e-mail
address (one stream per keyed hash of the address, so an address can be registered only once)."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Client:
    """Where a request came from, as recorded in the sign-in history: the client's address and its
    User-Agent (both bounded and cleaned by `client`)."""

    address: str = ""
    user_agent: str = ""


MAX_USER_AGENT = 256
MAX_ADDRESS = 64  # an IPv6 address with a zone fits


def client(address: str | None, user_agent: str | None) -> Client:
    """A Client whose strings are printable and bounded: a header never makes an event large or odd."""

    def clean(value: str | None, limit: int) -> str:
        return "".join(c for c in (value or "")[: limit * 2] if c.isprintable())[:limit]

    return Client(clean(address, MAX_ADDRESS), clean(user_agent, MAX_USER_AGENT))


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
        self.password_change_required = False

    @property
    def holds_global_role(self) -> bool:
        return any(g.site_id is None for g in self.grants)

    @property
    def is_admin(self) -> bool:
        """An active holder of `admin` granted everywhere (who the admin registry counts)."""
        return self.active and Grant(ADMIN_ROLE, None) in self.grants

    def activate(self, reason: str | None = None) -> bool:
        if self.active:
            return False
        self._activated(reason=reason or "")
        return True

    class Activated(Aggregate.Event):
        reason: str = ""  # the default replays events recorded before activations took a reason

    @event(Activated)
    def _activated(self, reason: str) -> None:
        self.active = True

    def deactivate(self, reason: str | None) -> bool:
        if not self.active:
            return False
        self._deactivated(reason=reason or "")
        return True

    @event("Deactivated")
    def _deactivated(self, reason: str) -> None:
        self.active = False

    def change_password(self, password_hash: str, kept_session: str = "", client: Client | None = None) -> None:
        """A new password the user chose (or an administrator set for good): no change is required any more.
        Every sign-in but `kept_session` ends (after the commit, application/identity/reactions.py)."""
        client = client or Client()
        self._password_changed(
            password_hash=password_hash, kept_session=kept_session,
            client_address=client.address, user_agent=client.user_agent,
        )  # fmt: skip

    class PasswordChanged(Aggregate.Event):
        password_hash: str
        kept_session: str = ""  # the defaults replay events recorded before the sign-in history
        client_address: str = ""
        user_agent: str = ""

    @event(PasswordChanged)
    def _password_changed(self, password_hash: str, kept_session: str, client_address: str, user_agent: str) -> None:
        self.password_hash = password_hash
        self.password_change_required = False

    def reset_password(self, password_hash: str, client: Client | None = None) -> None:
        """A temporary password set by an administrator: it signs in only to be changed, and every sign-in ends."""
        client = client or Client()
        self._password_reset(password_hash=password_hash, client_address=client.address, user_agent=client.user_agent)

    @event("PasswordReset")
    def _password_reset(self, password_hash: str, client_address: str, user_agent: str) -> None:
        self.password_hash = password_hash
        self.password_change_required = True

    def rename(self, full_name: str) -> bool:
        """The display name; False when it is already this one."""
        full_name = full_name.strip()
        if full_name == self.full_name:
            return False
        self._renamed(full_name=full_name)
        return True

    @event("Renamed")
    def _renamed(self, full_name: str) -> None:
        self.full_name = full_name

    # -- sign-in history: who signed in or out, from where, and which sign-ins were ended ------------

    def sign_in(self, session_id: str, client: Client) -> None:
        self._signed_in(session_id=session_id, client_address=client.address, user_agent=client.user_agent)

    @event("SignedIn")
    def _signed_in(self, session_id: str, client_address: str, user_agent: str) -> None:
        pass

    def sign_out(self, session_id: str, client: Client) -> None:
        self._signed_out(session_id=session_id, client_address=client.address, user_agent=client.user_agent)

    @event("SignedOut")
    def _signed_out(self, session_id: str, client_address: str, user_agent: str) -> None:
        pass

    def revoke_session(self, session_id: str, client: Client, reason: str | None = None) -> None:
        """End one sign-in (its refresh tokens, then its access tokens, after the commit)."""
        self._session_revoked(
            session_id=session_id, client_address=client.address, user_agent=client.user_agent, reason=reason or ""
        )

    @event("SessionRevoked")
    def _session_revoked(self, session_id: str, client_address: str, user_agent: str, reason: str) -> None:
        pass

    def revoke_sessions(self, client: Client, kept_session: str = "", reason: str | None = None) -> None:
        """End every sign-in of the user but `kept_session` (all of them when it is "")."""
        self._sessions_revoked(
            kept_session=kept_session, client_address=client.address, user_agent=client.user_agent, reason=reason or ""
        )

    @event("SessionsRevoked")
    def _sessions_revoked(self, kept_session: str, client_address: str, user_agent: str, reason: str) -> None:
        pass

    def grant_role(self, role: str, site_id: str | None, reason: str | None = None) -> bool:
        """Record RoleGranted; False when the user already holds that grant."""
        check_role_name(role)
        if site_id is not None:
            check_site_id(site_id)
        if Grant(role, site_id) in self.grants:
            return False
        self._role_granted(role=role, site_id=site_id, reason=reason or "")
        return True

    class RoleGranted(Aggregate.Event):
        role: str
        site_id: str | None
        reason: str = ""  # as for Activated

    @event(RoleGranted)
    def _role_granted(self, role: str, site_id: str | None, reason: str) -> None:
        self.grants.append(Grant(role, site_id))

    def revoke_role(self, role: str, site_id: str | None, reason: str | None = None) -> None:
        if Grant(role, site_id) not in self.grants:
            where = f" at site {site_id}" if site_id else ""
            raise GrantNotHeld(f"user {self.email} does not hold role {role}{where}", role=role, site_id=site_id)
        self._role_revoked(role=role, site_id=site_id, reason=reason or "")

    class RoleRevoked(Aggregate.Event):
        role: str
        site_id: str | None
        reason: str = ""  # as for Activated

    @event(RoleRevoked)
    def _role_revoked(self, role: str, site_id: str | None, reason: str) -> None:
        self.grants.remove(Grant(role, site_id))
