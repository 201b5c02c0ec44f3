"""Every WebSocket close code the server sends, and its reason text: the one list.

docs/protocol.md ("Close codes") describes each to clients; keep the two in step.
"""

from __future__ import annotations

SHUTDOWN = 1001  # the server is draining (SIGTERM)
SHUTDOWN_REASON = "server shutting down; reconnect and travel with since_seq = last seq received"

PROTOCOL_ERROR = 1002  # a frame RFC 6455 forbids
INVALID_TEXT = 1007  # a text message that is not UTF-8
INVALID_TEXT_REASON = "text message is not valid UTF-8"

TOKEN_EXPIRED = 1008  # policy violation: the token in force has expired
TOKEN_EXPIRED_REASON = "token expired"

MESSAGE_TOO_BIG = 1009  # over 64 KiB, or in too many fragments

EPOCH_CHANGED = 1012  # "service restart": the shared log starts over under a new epoch

SLOW_CONSUMER = 4008  # more unsent than --slow-consumer-limit
SLOW_CONSUMER_REASON = "slow consumer: reconnect and travel with since_seq = last seq received"
