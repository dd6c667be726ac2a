"""The client's JSON body, parsed once for the few fields routing needs; forwarded byte for byte.

Only a configured model rewrite (`[[models]] upstream`) re-serialises the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from lb import nesting
from lb.errors import BadRequest, InvalidJson, JsonTooDeep
from lb.prefix import routing_text

SESSION_HEADER = "X-Session-ID"


@dataclass(slots=True)
class Payload:
    raw: bytes
    data: dict[str, Any]
    model: str
    stream: bool

    def session_key(self, header: str | None) -> str | None:
        """What affinity hashes on: the caller's user, its prompt cache key, or a header."""
        for field in ("user", "prompt_cache_key"):
            value = self.data.get(field)
            if isinstance(value, str) and value:
                return value
        return header or None

    def routing_text(self, limit: int) -> bytes:
        """What cache_aware hashes: the prompt the backend will prefill (lb/prefix.py)."""
        return routing_text(self.data, (), limit)

    def for_upstream(self, upstream_model: str) -> bytes:
        if upstream_model == self.model:
            return self.raw
        return orjson.dumps({**self.data, "model": upstream_model})


def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 saying what is wrong with it."""
    if not raw:
        raise BadRequest("The request body is empty; expected a JSON object")
    try:
        data = nesting.loads(raw)
    except nesting.TooDeep as exc:
        raise JsonTooDeep(f"The request body is nested too deeply: {exc}") from None
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidJson("The request body must be a JSON object")
    return data


def parse_payload(raw: bytes) -> Payload:
    data = parse_object(raw)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", param="model")
    stream = data.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise BadRequest("'stream' must be a boolean", param="stream")
    return Payload(raw, data, model, bool(stream))
