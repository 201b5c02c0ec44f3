"""When a token expires and when to refresh it.

The client reads ``exp`` from the token itself (the JWT payload is base64 JSON; it is
not verified here, only the server can do that) so that it can refresh a token that is
about to expire *before* connecting with it, and from ``expires_at_ms`` of the
server's ``subscribed`` / ``refreshed`` messages once connected.
"""

from __future__ import annotations

import base64
import binascii
import json

# Refresh at about 80 % of the lifetime (docs/protocol.md, Lifecycle), and at least
# MIN_LEAD before the expiry (half the lifetime for shorter tokens), so that a refresh
# answered after a long travel still lands in time.
LIFETIME_SHARE = 0.8
MIN_LEAD_S = 30.0


def expiry_ms(token: str) -> int | None:
    """The ``exp`` claim of a JWT in milliseconds, or None when it cannot be read."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return int(exp * 1000)
    return None


def refresh_delay(now_ms: float, expires_at_ms: int, obtained_ms: float) -> float:
    """Seconds from ``now_ms`` until the token obtained at ``obtained_ms`` is refreshed."""
    lifetime = max(0.0, expires_at_ms - obtained_ms) / 1000
    lead = max(lifetime * (1 - LIFETIME_SHARE), min(MIN_LEAD_S, lifetime / 2))
    return max(0.0, (expires_at_ms - now_ms) / 1000 - lead)


def due(now_ms: float, expires_at_ms: int | None, obtained_ms: float) -> bool:
    """Whether a token is in (or past) its refresh window."""
    return expires_at_ms is not None and refresh_delay(now_ms, expires_at_ms, obtained_ms) <= 0
