"""Every aggregate's event schema versions in one registry (each declared beside its aggregate).

An aggregate whose events are all at version 1 declares nothing; one that moves an event to a new
version adds its `SCHEMAS` here.
"""

from __future__ import annotations

from domain.plugins import plugin
from domain.upcasting import Upcasters

UPCASTERS = Upcasters([plugin.SCHEMAS])
