"""Token counts for keys with a tpm limit: a streamed Chat Completions or Completions call is sent
upstream with `stream_options.include_usage`, and when the client did not ask for it, the extra
usage-only chunk the backend adds is kept from the client (its counts go to the access record).
"""

from __future__ import annotations

from typing import Any

import orjson

from lb.errors import ApiError
from lb.observe import RequestRecord
from lb.payload import Payload
from lb.relay import PASSTHROUGH, StreamFraming
from lb.teams.gate import Ticket
from lb.usage import USAGE_KEY, find_usage

_NO_CHOICES = b'"choices":[]'  # the usage-only chunk, compact JSON (vLLM, llama.cpp, OpenAI)
_NO_CHOICES_SPACED = b'"choices": []'  # ...and Python's json.dumps spacing


def usage_for(ticket: Ticket, payload: Payload, upstream_model: str,
              record: RequestRecord) -> tuple[bytes, StreamFraming]:
    """The upstream body and the client's framing for one OpenAI-surface call."""
    if ticket.team.limits.tpm is None or not payload.stream or asks_usage(payload.data):
        return payload.for_upstream(upstream_model), PASSTHROUGH
    options = payload.data.get("stream_options")
    body = {**payload.data, "model": upstream_model,
            "stream_options": {**(options if isinstance(options, dict) else {}),
                               "include_usage": True}}
    return orjson.dumps(body), HiddenUsage(record)


def asks_usage(data: dict[str, Any]) -> bool:
    options = data.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class HiddenUsage:
    """Passthrough framing minus the usage-only chunk (`"choices": []` with a `usage` object),
    whose counts are recorded instead."""

    __slots__ = ("_record",)
    is_closed = False  # the backend ends the stream

    def __init__(self, record: RequestRecord) -> None:
        self._record = record

    def events(self, raw: list[bytes]) -> bytes:
        return b"".join(event for event in raw if not self._is_usage_chunk(event))

    def end(self, tail: bytes) -> bytes:
        return b"" if self._is_usage_chunk(tail) else tail

    def fail(self, error: ApiError) -> bytes:
        return PASSTHROUGH.fail(error)

    def _is_usage_chunk(self, event: bytes) -> bool:
        # every chunk carries `"usage": null` once usage is asked for: look closer only at one
        # whose choices are empty (two byte searches per event, no parse)
        if USAGE_KEY not in event or (_NO_CHOICES not in event and
                                      _NO_CHOICES_SPACED not in event):
            return False
        usage = find_usage(event)
        if usage is None:  # `"usage": null` on the ordinary chunks
            return False
        start = event.find(b"{")
        try:
            chunk = orjson.loads(event[start:].strip()) if start >= 0 else None
        except orjson.JSONDecodeError:
            return False
        if not isinstance(chunk, dict) or chunk.get("choices"):
            return False  # counts riding on a chunk with content: the client gets it whole
        self._record.usage = usage
        return True
