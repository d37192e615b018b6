"""The admin registry: who is an active holder of `admin` granted everywhere, in one stream.

Every command that makes or unmakes such an administrator (grant, revoke, activate, deactivate) appends
to this stream in the same transaction as to the user's, so two commands that each remove "another"
administrator are serialised by the stream's expected version and the last one cannot go.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.identity.errors import LastAdmin

STREAM_TYPE = "admins"
KEY = "global"


class AdminRegistry(Aggregate):
    @staticmethod
    def create_id() -> UUID:
        return uuid5(NAMESPACE_URL, "charter:admins:global")

    @event("Opened")
    def __init__(self) -> None:
        self.members: list[str] = []

    def follow(self, user_id: str, is_admin: bool) -> None:
        """Bring the registry in line with one user's state; refuses to let the last administrator go."""
        if is_admin and user_id not in self.members:
            self._admitted(user_id=user_id)
        elif not is_admin and user_id in self.members:
            if self.members == [user_id]:
                raise LastAdmin(
                    "this is the last active administrator: grant admin to someone else first", user_id=user_id
                )
            self._dismissed(user_id=user_id)

    @event("Admitted")
    def _admitted(self, user_id: str) -> None:
        self.members = [*self.members, user_id]

    @event("Dismissed")
    def _dismissed(self, user_id: str) -> None:
        self.members = [m for m in self.members if m != user_id]
