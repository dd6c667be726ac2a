"""Pre-built byte templates for the chunks a stream repeats once per token: the JSON is encoded
once per request and each token is spliced in, so a long stream costs almost no CPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

HOLE = "\x00sim-token\x00"  # a string no request can make orjson emit unescaped
_HOLE_JSON = orjson.dumps(HOLE)


@dataclass(slots=True, frozen=True)
class ChunkTemplate:
    prefix: bytes
    suffix: bytes

    @classmethod
    def of(cls, obj: Any, *, before: bytes = b"", after: bytes = b"") -> ChunkTemplate:
        """`obj` holds `HOLE` exactly once, where each token's JSON string goes."""
        prefix, suffix = orjson.dumps(obj).split(_HOLE_JSON)
        return cls(before + prefix, suffix + after)

    def fill(self, token_json: bytes) -> bytes:
        return self.prefix + token_json + self.suffix
