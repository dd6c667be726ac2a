"""Id makers for Responses objects (`resp_…`, `msg_…`, `fc_…`, `rs_…`, `cmp_…`, `call_…`).

Randomness is injected: production passes `random.SystemRandom()`, tests a seeded `random.Random`.
"""

from __future__ import annotations

import random

ID_BITS = 192  # 48 hex digits, as long as OpenAI's own ids; collisions are out of the question


class IdMaker:
    """Makes prefixed, unguessable ids from one injected random source."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def make(self, prefix: str) -> str:
        return f"{prefix}_{self._rng.getrandbits(ID_BITS):048x}"

    def response(self) -> str:
        return self.make("resp")

    def message(self) -> str:
        return self.make("msg")

    def function_call(self) -> str:
        return self.make("fc")

    def reasoning(self) -> str:
        return self.make("rs")

    def compaction(self) -> str:
        return self.make("cmp")

    def call(self) -> str:
        """A `call_id` for a tool call whose backend gave it none."""
        return self.make("call")
