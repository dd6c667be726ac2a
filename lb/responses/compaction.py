"""Compaction: the older items of a conversation folded into one `compaction` item whose
encrypted_content only fleetlb can expand again.

The content is opaque and tamper-evident, not secret: base64url(zlib(JSON)) under an HMAC-SHA256
tag made with a server-side key. Nothing is summarised (no model runs), so expansion is lossless.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib
from typing import Any

import orjson

from lb.errors import BadRequest
from lb.responses.ids import IdMaker
from lb.responses.shape import complete_usage

Json = dict[str, Any]

FORMAT = "fc1"  # first dot-separated field of encrypted_content: the layout below
MIN_KEY_BYTES = 16  # a shorter HMAC key could be guessed
MAX_ENCRYPTED_CHARS = 10_485_760  # the specification's cap on encrypted_content
MAX_EXPANDED_BYTES = 64 << 20  # decompressed JSON of one item: bounds the memory a request costs
ZLIB_LEVEL = 6  # zlib's default trade-off; conversations are text and shrink well
_DOMAIN = b"fleetlb compaction v1\x00"  # the tag of anything else fleetlb signs never matches


def compact(
    items: list[Json],
    *,
    key: bytes,
    keep_last: int,
    ids: IdMaker,
    created_at: int,
    usage: Json | None = None,
) -> Json:
    """The `response.compaction` object for a conversation (input items, oldest first).

    Its output is the compaction item, then the last keep_last items as they were: sent back as
    input (with new items after them) it expands, in place, to the same conversation in the same
    order. Compaction items among items are expanded first, so payloads never nest.
    """
    if keep_last < 0:
        raise ValueError("keep_last must not be negative")
    flat = expand_all(items, key=key)
    split = max(len(flat) - keep_last, 0)
    sealed = {
        "type": "compaction",
        "id": ids.compaction(),
        "encrypted_content": seal(flat[:split], key=key),
    }
    return {
        "id": ids.response(),
        "object": "response.compaction",
        "created_at": created_at,
        "output": [sealed, *flat[split:]],
        "usage": usage or _zero_usage(),
    }


def expand_all(items: list[Json], *, key: bytes) -> list[Json]:
    """The items with every compaction item among them replaced, in place, by what it sealed."""
    flat: list[Json] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest("an input item must be an object", param=f"input[{index}]")
        flat += expand(item, key=key) if item.get("type") == "compaction" else [item]
    return flat


def seal(items: list[Json], *, key: bytes) -> str:
    """encrypted_content for items: `fc1.<base64url zlib JSON>.<base64url HMAC-SHA256>`."""
    payload = _b64encode(zlib.compress(orjson.dumps(items), ZLIB_LEVEL))
    return f"{FORMAT}.{payload}.{_b64encode(_tag(key, payload))}"


def expand(item: Json, *, key: bytes) -> list[Json]:
    """The items a compaction item made by seal() stands for. Raises BadRequest when the item
    was altered, made with another key, or not made by fleetlb.
    """
    content = item.get("encrypted_content")
    if not isinstance(content, str) or len(content) > MAX_ENCRYPTED_CHARS:
        raise BadRequest("a compaction item needs its encrypted_content", param="encrypted_content")
    fields = content.split(".")
    if len(fields) != 3 or fields[0] != FORMAT:
        raise BadRequest(
            "this compaction item was not made by this gateway", param="encrypted_content"
        )
    payload, tag = fields[1], fields[2]
    try:
        is_genuine = hmac.compare_digest(_tag(key, payload), _b64decode(tag))
        if not is_genuine:
            raise BadRequest(
                "this compaction item was altered or made with another key",
                param="encrypted_content",
            )
        inflater = zlib.decompressobj()
        raw = inflater.decompress(_b64decode(payload), MAX_EXPANDED_BYTES)
        if inflater.unconsumed_tail:
            raise BadRequest("this compaction item expands too far", param="encrypted_content")
        items = orjson.loads(raw)
    except (binascii.Error, ValueError, zlib.error) as exc:  # orjson's error is a ValueError
        raise BadRequest("this compaction item is damaged", param="encrypted_content") from exc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadRequest("this compaction item is damaged", param="encrypted_content")
    return items


def _tag(key: bytes, payload: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the compaction key must hold at least {MIN_KEY_BYTES} bytes")
    return hmac.new(key, _DOMAIN + payload.encode("ascii", "replace"), hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _zero_usage() -> Json:
    """No model runs to compact, so no tokens are spent."""
    return complete_usage({}) or {}
