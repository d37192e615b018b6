"""Which JSON an event is stored in a form other than the one it was sent in.

PostgreSQL's jsonb prints some numbers differently from how they were sent: a number with an exponent
in full, -0.0 as 0.0. An event's hash covers its payload and metadata as they will be read back, so the
event store asks PostgreSQL for the stored form of an event only when it may differ (see
`EventStore._encode`), and must not ask for every event: that is a round trip per command.
"""

from __future__ import annotations

import re

# What PostgreSQL rewrites in JSON it stores: a number with an exponent (printed in full) and -0.0 (as
# 0.0). The quick test looks for such a number where compact JSON starts a value (after ':', ',' or '[');
# it may still match inside a string, so the exact one then reads strings as strings: only a number sends
# the event for its stored form (a traceparent's hex digits did, for every traced command).
_REWRITTEN = re.compile(rb"[:,\[]-?[0-9]+(?:\.[0-9]+)?[eE]|[:,\[]-0\.0")
_REWRITTEN_OUTSIDE_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|([0-9][eE][-+]?[0-9]|-0\.0)')


def may_be_rewritten(document: bytes) -> bool:
    """Whether PostgreSQL may store this compact JSON object in another form than it was sent (see above)."""
    return _REWRITTEN.search(document) is not None and any(
        m.group(1) is not None for m in _REWRITTEN_OUTSIDE_STRINGS.finditer(document)
    )
