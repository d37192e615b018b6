"""The password policy: pure rules a new password must pass, each refusal naming its rule.

The list of common passwords is given by the caller (infrastructure/identity/common_passwords.py loads
the one shipped with Charter), so the rules stay free of I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.identity.errors import WeakPassword

MIN_LENGTH = "min_length"
NOT_EMAIL = "not_email"
NOT_COMMON = "not_common"


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 8
    common: frozenset[str] = field(default_factory=frozenset)  # lower-case; empty: the rule is off

    def check(self, password: str, email: str | None = None, field_name: str = "password") -> None:
        """Refuse `password` (WeakPassword, `details.rule` and `details.field`) unless it passes every rule."""
        if len(password) < self.min_length:
            raise WeakPassword(
                f"password must have at least {self.min_length} characters", field=field_name, rule=MIN_LENGTH,
                min_length=self.min_length,
            )  # fmt: skip
        folded = password.strip().casefold()
        if email and folded in {email.strip().casefold(), email.strip().casefold().split("@", 1)[0]}:
            raise WeakPassword("password must not be the account's e-mail address", field=field_name, rule=NOT_EMAIL)
        if folded in self.common:
            raise WeakPassword(
                "password is among the most common passwords; choose another", field=field_name, rule=NOT_COMMON
            )
