"""The per-call decision of a client key (no I/O of its own): may this team use this model, is it
within its limits; and, when the call ends, its in-flight lease back and its tokens charged.

`KeyGate` outlives config reloads (like the admission queue): limits and totals are kept by key
name, so a reload changes a team's limits without resetting its counters.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lb.errors import KeyRateLimited, ModelNotFound
from lb.teams.limits import Decision, LimitState, LocalLimits
from lb.teams.stats import KeyStats, KeyTotals
from lb.teams.table import Team
from lb.usage import Usage

_LIMIT_WORDS = {"rpm": "requests per minute", "tpm": "tokens per minute",
                "max_in_flight": "concurrent requests"}


class Ticket:
    """One admitted model call; `finish()` is idempotent and must be called on every path."""

    __slots__ = ("_gate", "decision", "is_finished", "team", "totals")

    def __init__(self, gate: KeyGate, team: Team, decision: Decision,
                 totals: KeyTotals) -> None:
        self._gate = gate
        self.team = team
        self.decision = decision
        self.totals = totals
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
        return limit_headers(decision, self._gate.reset_text)


class KeyGate:
    def __init__(self, clock: Callable[[], float], limits: LimitState | None = None) -> None:
        self.clock = clock
        self.limits: LimitState = limits or LocalLimits()
        self.reset_text = ResetText()
        self.stats = KeyStats()

    async def admit(self, team: Team, model: str) -> Ticket:
        """Raises ModelNotFound (as if the model did not exist) or KeyRateLimited."""
        _check_access(team, model)
        return self._ticket(team, await self.limits.admit(team.name, team.limits, self.clock()))

    def admit_now(self, team: Team, model: str) -> Ticket | None:
        """`admit` without a coroutine when the limits are in-process (they never suspend);
        None, having checked nothing, when they must be awaited (shared limits)."""
        limits = self.limits
        if not isinstance(limits, LocalLimits):
            return None
        _check_access(team, model)
        return self._ticket(team, limits.decide(limits.state(team.name), team.limits,
                                                self.clock()))

    def _ticket(self, team: Team, decision: Decision) -> Ticket:
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
        return Ticket(self, team, decision, totals)

    def finish(self, ticket: Ticket, usage: Usage | None) -> None:
        name = ticket.team.name
        totals = ticket.totals
        totals.in_flight -= 1
        tokens = 0
        if usage is not None:
            totals.input_tokens += usage.input_tokens
            totals.output_tokens += usage.output_tokens
            tokens = usage.input_tokens + usage.output_tokens
        self.limits.finish(name, tokens, self.clock())


def _check_access(team: Team, model: str) -> None:
    if not team.allows(model):
        raise ModelNotFound(f"The model '{model}' does not exist", param="model")


def limit_headers(decision: Decision,
                  text: Callable[[float], str] | None = None) -> dict[str, str]:
    """OpenAI's six x-ratelimit-* headers (three when the key has only rpm or only tpm);
    `text` spells the reset durations (default `duration`)."""
    spell = text or duration
    requests, tokens = decision.requests, decision.tokens
    headers: dict[str, str] = {}
    if requests is not None:
        headers["x-ratelimit-limit-requests"] = str(requests.limit)
        headers["x-ratelimit-remaining-requests"] = str(requests.remaining)
        headers["x-ratelimit-reset-requests"] = spell(requests.reset_s)
    if tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(tokens.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tokens.remaining)
        headers["x-ratelimit-reset-tokens"] = spell(tokens.reset_s)
    return headers


class ResetText:
    """`duration`, kept by the millisecond it spells: the answers of one busy millisecond (and
    the keys whose windows reset at the same time) share the text. Bounded."""

    __slots__ = ("_known",)
    LIMIT = 4096

    def __init__(self) -> None:
        self._known: dict[int, str] = {}

    def __call__(self, seconds: float) -> str:
        ms = math.ceil(seconds * 1000) if seconds > 0 else 0
        text = self._known.get(ms)
        if text is None:
            if len(self._known) >= self.LIMIT:
                self._known.clear()
            text = self._known[ms] = _spelt(ms)
        return text


def duration(seconds: float) -> str:
    """OpenAI's (Go's) duration spelling: `120ms`, `1.5s`, `6m0s`."""
    return _spelt(math.ceil(seconds * 1000) if seconds > 0 else 0)


def _spelt(ms: int) -> str:
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:  # `:g` drops the trailing zeros (1.5s, 20s); whole ms, so never an exponent
        return f"{ms / 1000:g}s"
    minutes, ms = divmod(ms, 60_000)
    return f"{minutes}m{ms / 1000:g}s"
