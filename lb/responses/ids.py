"""Id makers for Responses objects (`resp_…`, `msg_…`, `fc_…`, `rs_…`, `cmp_…`, `call_…`).

Randomness is injected: production passes a `PooledSystemRandom`, tests a seeded `random.Random`.
"""

from __future__ import annotations

import os
import random
import weakref
from typing import Any, NoReturn

ID_BITS = 192  # 48 hex digits, as long as OpenAI's own ids; collisions are out of the question


POOL_BYTES = 4096  # one getrandom(2) per ~170 ids


class PooledSystemRandom(random.Random):
    """random.SystemRandom's bits (os.urandom, the kernel's CSPRNG), read POOL_BYTES at a time
    instead of one getrandom(2) per id (three per translated turn). A forked child drops the
    pool it inherited, so it never repeats its parent's ids."""

    def __init__(self) -> None:
        super().__init__()
        self._pool = b""
        self._at = 0
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _drop_pool(ref()))

    def getrandbits(self, k: int) -> int:
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        size = (k + 7) // 8
        at = self._at
        if at + size > len(self._pool):
            self._pool, at = os.urandom(max(POOL_BYTES, size)), 0
        self._at = at + size
        value = int.from_bytes(self._pool[at : at + size], "big")
        return value >> (size * 8 - k)

    def random(self) -> float:
        return (self.getrandbits(56) >> 3) * (1.0 / (1 << 53))

    def seed(self, *args: Any, **kwargs: Any) -> None:
        return None  # like SystemRandom: nothing to seed

    def getstate(self) -> NoReturn:
        raise NotImplementedError("PooledSystemRandom has no state to save")

    def setstate(self, state: Any) -> NoReturn:
        raise NotImplementedError("PooledSystemRandom has no state to restore")


def _drop_pool(rng: PooledSystemRandom | None) -> None:
    if rng is not None:
        rng._pool, rng._at = b"", 0


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
