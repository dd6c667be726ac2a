"""How each endpoint serves /v1/responses: natively, by translation to Chat Completions, or not.

`auto` follows the prober's finding (`supports_responses_api`); unknown support means translate,
which every OpenAI-compatible backend can serve.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from lb.endpoints import Endpoint

Mode = Literal["native", "translate"]
ModelMode = Literal["native", "translate", "mixed", "disabled"]


def mode_of(endpoint: Endpoint) -> Mode | None:
    """The mode this endpoint serves the Responses API in, or None when it must not."""
    configured = endpoint.config.responses
    if configured == "disabled":
        return None
    if configured == "auto":
        return "native" if endpoint.supports_responses_api else "translate"
    return configured


def serves_responses(endpoint: Endpoint) -> bool:
    return mode_of(endpoint) is not None


def model_mode(members: Iterable[Endpoint]) -> ModelMode:
    """What /v1/models tells clients about one model's pool."""
    modes = {mode_of(ep) for ep in members} - {None}
    if not modes:
        return "disabled"
    if len(modes) == 1:
        only: ModelMode = "native" if "native" in modes else "translate"
        return only
    return "mixed"
