"""The per-call decision of a client key (no I/O of its own): may this team use this model, is it
within its limits; and, when the call ends, its in-flight lease back and its tokens charged.

`KeyGate` outlives config reloads (like the admission queue): limits and totals are kept by key
name, so a reload changes a team's limits without resetting its counters.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lb.errors import KeyRateLimited, ModelNotFound
from lb.teams.limits import Decision, LimitState, LocalLimits, Quota
from lb.teams.stats import KeyStats
from lb.teams.table import Team
from lb.usage import Usage

_LIMIT_WORDS = {"rpm": "requests per minute", "tpm": "tokens per minute",
                "max_in_flight": "concurrent requests"}


class Ticket:
    """One admitted model call; `finish()` is idempotent and must be called on every path."""

    __slots__ = ("_gate", "decision", "is_finished", "team")

    def __init__(self, gate: KeyGate, team: Team, decision: Decision) -> None:
        self._gate = gate
        self.team = team
        self.decision = decision
        self.is_finished = False

    def finish(self, usage: Usage | None) -> None:
        if not self.is_finished:
            self.is_finished = True
            self._gate.finish(self, usage)

    def headers(self) -> dict[str, str] | None:
        """OpenAI's x-ratelimit-* headers, or None when the key has no rpm nor tpm."""
        decision = self.decision
        if decision.requests is None and decision.tokens is None:
            return None
        return limit_headers(decision)


class KeyGate:
    def __init__(self, clock: Callable[[], float], limits: LimitState | None = None) -> None:
        self.clock = clock
        self.limits: LimitState = limits or LocalLimits()
        self.stats = KeyStats()

    async def admit(self, team: Team, model: str) -> Ticket:
        """Raises ModelNotFound (as if the model did not exist) or KeyRateLimited."""
        if not team.allows(model):
            raise ModelNotFound(f"The model '{model}' does not exist", param="model")
        decision = await self.limits.admit(team.name, team.limits, self.clock())
        totals = self.stats.of(team.name)
        refused = decision.refused_by
        if refused is not None:
            totals.rate_limited[refused] = totals.rate_limited.get(refused, 0) + 1
            wait = decision.retry_after_s
            raise KeyRateLimited(
                f"Rate limit reached for key '{team.name}' on {_LIMIT_WORDS[refused]}: "
                f"please try again in {wait:.1f}s", retry_after_s=wait,
                limit_headers=limit_headers(decision))
        totals.requests += 1
        totals.in_flight += 1
        return Ticket(self, team, decision)

    def finish(self, ticket: Ticket, usage: Usage | None) -> None:
        name = ticket.team.name
        totals = self.stats.of(name)
        totals.in_flight -= 1
        tokens = 0
        if usage is not None:
            totals.input_tokens += usage.input_tokens
            totals.output_tokens += usage.output_tokens
            tokens = usage.input_tokens + usage.output_tokens
        self.limits.finish(name, tokens, self.clock())


def limit_headers(decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    _put(headers, "requests", decision.requests)
    _put(headers, "tokens", decision.tokens)
    return headers


def _put(headers: dict[str, str], what: str, quota: Quota | None) -> None:
    if quota is not None:
        headers[f"x-ratelimit-limit-{what}"] = str(quota.limit)
        headers[f"x-ratelimit-remaining-{what}"] = str(quota.remaining)
        headers[f"x-ratelimit-reset-{what}"] = duration(quota.reset_s)


def duration(seconds: float) -> str:
    """OpenAI's (Go's) duration spelling: `120ms`, `1.5s`, `6m0s`."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
