"""The top-level parameters of a Responses request in translate mode: which are sent, which are
dropped (and said), which are refused.

The rule: refuse (400, naming the parameter) only what would change the answer if it were
ignored: background mode, a tool-call budget, server-side conversations and prompt templates, a
value outside a closed set, a known key of the wrong type. Everything else Chat Completions
cannot carry is dropped and listed (`x-fleetlb-dropped` and the access line): an agent client
cannot negotiate, and one optional field must not cost it the whole turn.

Accepted but not sent to the backend, and not listed as dropped, because fleetlb itself honours
them or they ask for nothing a backend could do: metadata (echoed); store (fleetlb's own store);
include reasoning.encrypted_content (there is never encrypted reasoning: a backend's reasoning
comes back as a reasoning item in the clear); prompt_cache_key (affinity routing uses it; sent to
`openai` endpoints, whose Chat Completions take it); service_tier (the response reports the tier
used, "default"); truncation; safety_identifier; stream_options.include_obfuscation (no padding is
ever added); reasoning.summary (no summaries are made: reasoning comes back as reasoning_text).
"""

from __future__ import annotations

import re
from typing import Any

from lb.errors import BadRequest

Json = dict[str, Any]

_NUMBER = (int, float)
TYPES: dict[str, tuple[type, ...]] = {
    "input": (str, list),
    "instructions": (str,),
    "previous_response_id": (str,),
    "tools": (list,),
    "tool_choice": (str, dict),
    "parallel_tool_calls": (bool,),
    "text": (dict,),
    "max_output_tokens": (int,),
    "max_tool_calls": (int,),
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "reasoning": (dict,),
    "user": (str,),
    "metadata": (dict,),
    "store": (bool,),
    "include": (list,),
    "prompt_cache_key": (str,),
    "service_tier": (str,),
    "truncation": (str,),
    "safety_identifier": (str,),
    "stream": (bool,),
    "stream_options": (dict,),
    "top_logprobs": (int,),
    "background": (bool,),
    "model": (str,),
    "conversation": (str, dict),
    "prompt": (dict,),
}
# Values that must be known: an unknown one is a mistake, not an option to skip.
CLOSED: dict[str, frozenset[Any]] = {
    "truncation": frozenset({"auto", "disabled"}),
    "reasoning.effort": frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"}),
    "reasoning.summary": frozenset({"auto", "concise", "detailed"}),
}
# Sub-keys and list values that are honoured; the others are dropped and said.
KNOWN_MEMBERS: dict[str, frozenset[str]] = {
    "include": frozenset({"reasoning.encrypted_content", "message.output_text.logprobs"}),
    "stream_options": frozenset({"include_obfuscation"}),
    "text": frozenset({"format", "verbosity"}),
    "reasoning": frozenset({"effort", "summary"}),
}
MAX_TOP_LOGPROBS = 20  # the specification's range for top_logprobs
DEFAULT_VERBOSITY = "medium"  # the only verbosity Chat Completions gives


def check_params(req: Json) -> list[str]:
    """Raise BadRequest for what must be refused; return what is dropped, in request order."""
    dropped: list[str] = []
    for key, value in req.items():
        types = TYPES.get(key)
        if types is None:
            dropped.append(key)
            continue
        if value is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise BadRequest(f"{key} has the wrong type", param=key)
        members = KNOWN_MEMBERS.get(key)
        if members is not None:  # a list (include) or an object: its values or its keys
            sep = ":" if isinstance(value, list) else "."
            dropped += [f"{key}{sep}{m}" for m in req[key] if m not in members]
    _refuse(req)
    text = req.get("text") or {}
    if text.get("verbosity") not in (None, DEFAULT_VERBOSITY):
        dropped.append("text.verbosity")
    return dropped


def _refuse(req: Json) -> None:
    if req.get("background"):
        raise BadRequest("background mode is not supported", param="background")
    if req.get("max_tool_calls") is not None:
        raise BadRequest(
            "max_tool_calls cannot be enforced over Chat Completions", param="max_tool_calls"
        )
    if req.get("conversation") is not None:
        raise BadRequest("conversations are not served in translate mode; send the history as "
                         "input or use previous_response_id", param="conversation")
    if req.get("prompt") is not None:
        raise BadRequest("prompt templates are not served in translate mode", param="prompt")
    if not 0 <= (req.get("top_logprobs") or 0) <= MAX_TOP_LOGPROBS:
        raise BadRequest(f"top_logprobs must be 0 to {MAX_TOP_LOGPROBS}", param="top_logprobs")
    if req.get("truncation") is not None and req["truncation"] not in CLOSED["truncation"]:
        raise BadRequest(f"unsupported value for truncation: {req['truncation']!r:.200}",
                         param="truncation")
    reasoning = req.get("reasoning") or {}
    for key in ("effort", "summary"):
        value = reasoning.get(key)
        if value is not None and value not in CLOSED[f"reasoning.{key}"]:
            raise BadRequest(f"unsupported reasoning.{key} {value!r:.200}",
                             param=f"reasoning.{key}")


DROPPED_HEADER = "x-fleetlb-dropped"
MAX_DROPPED_CHARS = 1024  # of the header value: a client can send any number of unknown keys
_UNSAFE = re.compile(r"[^\x21-\x7e]|,")  # one token per entry: no spaces, controls or commas


def dropped_value(dropped: tuple[str, ...] | list[str]) -> str:
    """The dropped entries as one header-safe line; the client chose some of these names."""
    value = ",".join(_UNSAFE.sub("?", entry[:MAX_DROPPED_CHARS]) for entry in dropped)
    if len(value) > MAX_DROPPED_CHARS:
        value = value[: MAX_DROPPED_CHARS - 4].rsplit(",", 1)[0] + ",..."
    return value
