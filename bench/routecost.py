"""`python -m bench.routecost`: what cache_aware costs per request, by prompt size.

The routing text, its block hashes, the map lookup and insert, and the choice: one `pick` of a
fresh request against a warm pool of 4 endpoints, next to `least_in_flight`'s pick. Pure Python,
no sockets: the part of the per-request cost the strategy adds (the gateway's whole overhead is
`python -m bench`).
"""

from __future__ import annotations

import random
import sys
import timeit
from collections.abc import Sequence
from typing import Any

from lb.balancing import PickRequest, RouteNote, make_strategy
from lb.config import CacheAwareConfig, EndpointConfig
from lb.endpoints import Endpoint
from lb.payload import Payload

SIZES_KB = (1, 16, 64, 256)  # prompt bytes; beyond max_blocks x block_bytes (64 KB) is not hashed
REPEAT = 5


def _body(kb: int) -> dict[str, Any]:
    turn = "the quick brown fox jumps over the lazy dog " * 23  # ~1 KB
    messages = [{"role": "user" if i % 2 else "assistant", "content": f"{i} {turn}"}
                for i in range(kb)]
    return {"model": "m", "messages": [{"role": "system", "content": "rules"}, *messages]}


def measure(kb: int, number: int) -> tuple[float, float]:
    """Microseconds per pick: (cache_aware, least_in_flight)."""
    pool = [Endpoint(EndpointConfig(name=f"e{i}", url="http://127.0.0.1:1")) for i in range(4)]
    payload = Payload(b"", _body(kb), "m", False)
    cache = make_strategy("cache_aware", random.Random(1), CacheAwareConfig())
    plain = make_strategy("least_in_flight", random.Random(1))
    for ep in pool:  # warm: every endpoint holds the prompt
        cache.pick(pool, [ep], PickRequest("m", None, payload.routing_text, RouteNote()))

    def cache_pick() -> None:
        cache.pick(pool, pool, PickRequest("m", None, payload.routing_text, RouteNote()))

    def plain_pick() -> None:
        plain.pick(pool, pool, PickRequest("m", None, payload.routing_text, RouteNote()))

    best_cache = min(timeit.repeat(cache_pick, number=number, repeat=REPEAT)) / number
    best_plain = min(timeit.repeat(plain_pick, number=number, repeat=REPEAT)) / number
    return best_cache * 1e6, best_plain * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    print(f"{'prompt':>8} {'cache_aware us':>15} {'least_in_flight us':>19}")
    for kb in SIZES_KB:
        cache_us, plain_us = measure(kb, 50 if quick else 500)
        print(f"{kb:>5} KB {cache_us:15.1f} {plain_us:19.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
