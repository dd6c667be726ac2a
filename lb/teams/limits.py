"""Per-key rate, token and concurrency limits (pure; the clock is passed in as `now`).

The state of the limits sits behind one seam, `LimitState`, so that several fleetlb instances can
share it (issue 14, `[limits] shared = true`) without the request path changing:

- `admit(name, limits, now)` is awaited once per model call. It decides (rpm window, tpm window,
  max_in_flight), and when it admits it has counted the request and taken an in-flight lease.
  The in-process `LocalLimits` never suspends (an `async def` that returns at once costs a
  coroutine, ~0.2 µs); a shared implementation runs one atomic script per call (e.g. a Redis Lua
  script over the two window counters and a lease set with expiry) and fails open on errors.
- `finish(name, tokens, now)` is called exactly once per admitted call, on every exit path,
  possibly while the task is being cancelled: it must not block. A shared implementation queues the
  write (in-flight -1, tokens +N) and flushes it from its own task; its leases expire on their own
  when an instance dies.
- `window(name, now)` reads the current window for /admin/keys.

The gate holds one `LimitState` for the app's life (`KeyGate.limits`, built in lb/app.py): a
shared implementation is handed to `KeyGate(clock, limits)` there, or set on `app[KEY_GATE].limits`
by the lifespan that opens its Redis link, before the first request. Totals for /admin/keys and the
metrics (lb.teams.stats) and the `fleetlb_key_in_flight` gauge stay per instance either way.

Windows are sliding-window counters: the count of the current fixed minute plus the previous
minute's count weighted by how much of it still overlaps the last 60 s (two numbers per limit, one
INCR each in Redis). A call is admitted while `used + 1 <= rpm` and while `used tokens < tpm`: a
call's tokens are known only when it ends, so a burst overshoots tpm by what the calls in flight
use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from lb.teams.table import KeyLimits

WINDOW_S = 60.0  # rpm and tpm are per minute
IN_FLIGHT_RETRY_S = 1.0  # what a key at max_in_flight is told to wait
LimitName = Literal["rpm", "tpm", "max_in_flight"]


@dataclass(slots=True)
class Window:
    """A sliding-window counter: `current` counts since `start` (a multiple of WINDOW_S),
    `previous` the whole minute before."""

    start: float = 0.0
    previous: float = 0.0
    current: float = 0.0

    def roll(self, now: float) -> None:
        if now < self.start + WINDOW_S:
            return
        start = now - now % WINDOW_S
        self.previous = self.current if start - self.start < 2 * WINDOW_S else 0.0
        self.current = 0.0
        self.start = start

    def used(self, now: float) -> float:
        """What the last WINDOW_S seconds hold (call `roll` first)."""
        overlap = 1.0 - (now - self.start) / WINDOW_S
        return self.previous * overlap + self.current

    def wait_for(self, room: float, limit: float, now: float) -> float:
        """Seconds until `used + room <= limit` with no new traffic (0 if it is now)."""
        target = limit - room
        if self.used(now) <= target:
            return 0.0
        if self.current <= target:  # in this minute, as the previous one slides out
            share = 1.0 - (target - self.current) / self.previous
            return max(0.0, self.start + WINDOW_S * share - now)
        # only in the next minute, as this one slides out
        share = 1.0 - target / self.current
        return self.start + WINDOW_S * (1.0 + share) - now

    def until_empty(self, now: float) -> float:
        """Seconds until the window is back to its initial state (OpenAI's `reset`)."""
        if self.current:
            return self.start + 2 * WINDOW_S - now
        if self.previous:
            return self.start + WINDOW_S - now
        return 0.0


class Quota(NamedTuple):  # tuples: built on every call of a limited key, twice
    """One limit as the x-ratelimit-* headers tell it."""

    limit: int
    remaining: int
    reset_s: float


class Decision(NamedTuple):
    admitted: bool
    requests: Quota | None = None  # None when the key has no rpm
    tokens: Quota | None = None  # None when the key has no tpm
    refused_by: LimitName | None = None
    retry_after_s: float = 0.0


UNLIMITED = Decision(True)  # a key without limits: nothing to say in headers


@dataclass(frozen=True, slots=True)
class WindowView:
    in_flight: int
    requests: int  # in the last WINDOW_S seconds
    tokens: int


class LimitState(Protocol):
    """Where per-key windows and in-flight leases live (see the module docstring)."""

    async def admit(self, name: str, limits: KeyLimits, now: float) -> Decision: ...

    def finish(self, name: str, tokens: int, now: float) -> None: ...

    async def window(self, name: str, now: float) -> WindowView: ...


@dataclass(slots=True, eq=False)
class _KeyState:
    requests: Window
    tokens: Window
    in_flight: int = 0


class LocalLimits:
    """The limits of one instance, kept in memory by key name (so a reload that keeps a name
    keeps its counts)."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, _KeyState] = {}

    def state(self, name: str) -> _KeyState:
        state = self._keys.get(name)
        if state is None:
            state = self._keys[name] = _KeyState(Window(), Window())
        return state

    async def admit(self, name: str, limits: KeyLimits, now: float) -> Decision:
        return self.decide(self.state(name), limits, now)

    def decide(self, state: _KeyState, limits: KeyLimits, now: float) -> Decision:
        requests, tokens = state.requests, state.tokens
        if now >= requests.start + WINDOW_S:
            requests.roll(now)
        if limits.is_unlimited:
            requests.current += 1
            state.in_flight += 1
            return UNLIMITED
        if now >= tokens.start + WINDOW_S:
            tokens.roll(now)
        rpm, tpm, max_in_flight = limits.rpm, limits.tpm, limits.max_in_flight
        # Window.used and until_empty inlined: this runs on every call of a limited key
        r_start, r_previous, r_current = requests.start, requests.previous, requests.current
        t_start, t_previous, t_current = tokens.start, tokens.previous, tokens.current
        used_requests = r_previous * (1.0 - (now - r_start) / WINDOW_S) + r_current
        used_tokens = t_previous * (1.0 - (now - t_start) / WINDOW_S) + t_current
        refused: LimitName | None = None
        wait = 0.0
        if rpm is not None and used_requests + 1.0 > rpm:
            refused, wait = "rpm", requests.wait_for(1.0, rpm, now)
        elif tpm is not None and used_tokens + 1.0 > tpm:
            refused, wait = "tpm", tokens.wait_for(1.0, tpm, now)
        elif max_in_flight is not None and state.in_flight >= max_in_flight:
            refused, wait = "max_in_flight", IN_FLIGHT_RETRY_S
        if refused is None:
            requests.current = r_current = r_current + 1
            used_requests += 1.0
            state.in_flight += 1
        request_quota = token_quota = None
        if rpm is not None:
            left = int(rpm - used_requests)
            request_quota = Quota(rpm, left if left > 0 else 0,
                                  r_start + 2 * WINDOW_S - now if r_current else
                                  r_start + WINDOW_S - now if r_previous else 0.0)
        if tpm is not None:
            left = int(tpm - used_tokens)
            token_quota = Quota(tpm, left if left > 0 else 0,
                                t_start + 2 * WINDOW_S - now if t_current else
                                t_start + WINDOW_S - now if t_previous else 0.0)
        return Decision(refused is None, request_quota, token_quota, refused, wait)

    def finish(self, name: str, tokens: int, now: float) -> None:
        state = self._keys.get(name)
        if state is None:
            return
        if state.in_flight > 0:
            state.in_flight -= 1
        if tokens:
            window = state.tokens
            if now >= window.start + WINDOW_S:
                window.roll(now)
            window.current += tokens

    async def window(self, name: str, now: float) -> WindowView:
        state = self._keys.get(name)
        if state is None:
            return WindowView(0, 0, 0)
        state.requests.roll(now)
        state.tokens.roll(now)
        return WindowView(state.in_flight, math.ceil(state.requests.used(now)),
                          math.ceil(state.tokens.used(now)))
