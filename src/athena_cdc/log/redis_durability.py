"""``--redis-durability``: when an append to the Redis store counts as done.

* ``none`` -- Redis executed the append (in memory). A Redis crash loses what its
  persistence had not written yet (with ``appendfsync everysec``, about the last
  second); those seqs can then be handed out again under the same epoch.
* ``waitaof`` -- ``WAITAOF 1 0``: the primary fsynced the append to its AOF (Redis
  >= 7.2, Valkey). A Redis crash or power loss loses nothing acknowledged.
* ``replicas:N`` -- ``WAIT N``: N replicas received the append. A crash of the primary
  loses nothing acknowledged if a replica that has it is promoted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Durability:
    mode: str  # none, waitaof or replicas
    replicas: int = 0

    @classmethod
    def parse(cls, text: str) -> Durability:
        if text in ("none", "waitaof"):
            return cls(text)
        name, _, count = text.partition(":")
        if name == "replicas" and count.isdigit() and 1 <= int(count) <= 100:
            return cls("replicas", int(count))
        raise ValueError("expected none, waitaof or replicas:N (N from 1 to 100)")
