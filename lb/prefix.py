"""Cache-aware routing's pure core: the routing text, its chained block hashes, and the bounded
map block hash -> endpoints that hold it (one per pool).

A backend's prefix cache (vLLM's automatic prefix caching, llama.cpp's slot cache) holds what it
prefilled, so the routing text is what the backend will prefill, in order — instructions, then the
messages or Responses items — and not what it does not (tools, schemas, sampling options).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

BLOCK_BYTES = 256  # ≈ 64 tokens at ~4 bytes a token: llm-d's estimate when there is no tokenizer
MAX_BLOCKS = 256  # ≈ 64 KB of prompt hashed per request: bounds the per-request cost
# what one map entry costs in CPython (measured with tracemalloc in tests/test_prefix.py): the
# OrderedDict node and its int key, and a small tuple of shared endpoint names
ENTRY_BYTES = 200
_SEP = "\x1e"  # between the pieces of the text: "ab"+"c" must not read as "a"+"bc"
_TEXT_KEYS = ("text", "arguments", "output", "refusal")  # text-bearing fields of parts and items
_NESTED_KEYS = ("content", "summary")  # lists of parts (messages, reasoning items)

# the lazily built routing text of one request: called with the most bytes that will be hashed
PromptSource = Callable[[int], bytes]


def routing_text(data: Mapping[str, Any], history: Sequence[Any] = (),
                 limit: int = BLOCK_BYTES * MAX_BLOCKS) -> bytes:
    """What the backend will prefill for this request body, up to about `limit` bytes.

    One function serves every surface, since each names its parts differently: Responses
    `instructions`, Ollama's `system`, Chat and Ollama `messages`, then `history` (the items
    rebuilt from `previous_response_id` in translate mode), Responses `input`, Completions and
    Ollama `prompt`. Only text goes in — roles, content parts, tool calls and their results,
    reasoning — so a Responses item reads the same whether the client sent it as a bare string or
    fleetlb stored it as a normalised message.
    """
    out: list[str] = []
    budget = [limit]
    for key in ("instructions", "system"):
        _add(data.get(key), out, budget)
    for source in (data.get("messages"), history, data.get("input"), data.get("prompt")):
        if isinstance(source, list | tuple):
            for item in source:
                if budget[0] <= 0:
                    break
                _add_item(item, out, budget)
        else:
            _add(source, out, budget)
    return _SEP.join(out).encode("utf-8", "surrogatepass")[:limit]


def _add(value: Any, out: list[str], budget: list[int]) -> None:
    if isinstance(value, str) and value and budget[0] > 0:
        out.append(value)
        budget[0] -= len(value) + 1


def _add_item(item: Any, out: list[str], budget: list[int]) -> None:
    """One message or Responses item: its role, its text fields, its parts, its tool calls."""
    if not isinstance(item, Mapping):
        _add(item, out, budget)  # a prompt string in a list, a bare string part
        return
    _add(item.get("role"), out, budget)
    _add(item.get("name"), out, budget)  # a function call's name
    _add_texts(item, out, budget)
    for key in _NESTED_KEYS:
        nested = item.get(key)
        if isinstance(nested, list):
            for part in nested:
                _add_part(part, out, budget)
        else:
            _add(nested, out, budget)
    for key in ("reasoning_content", "reasoning", "thinking"):  # vLLM, Ollama: chat reasoning
        _add(item.get(key), out, budget)
    calls = item.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                _add(function.get("name"), out, budget)
                arguments = function.get("arguments")
                _add(arguments if isinstance(arguments, str) else repr(arguments), out, budget)


def _add_texts(item: Mapping[str, Any], out: list[str], budget: list[int]) -> None:
    for key in _TEXT_KEYS:
        _add(item.get(key), out, budget)


def _add_part(part: Any, out: list[str], budget: list[int]) -> None:
    if isinstance(part, Mapping):
        _add_texts(part, out, budget)
    else:
        _add(part, out, budget)


def block_hashes(text: bytes, seed: str, block_bytes: int = BLOCK_BYTES,
                 max_blocks: int = MAX_BLOCKS) -> list[int]:
    """Chained hashes of the text's blocks: block i's hash stands for the whole prefix up to it.

    Seeded with the upstream model name, so two models never share an entry. Python's own bytes
    hash (SipHash, in C) is fast and per process, which suits a map that lives in one process.
    A last partial block counts too: an identical re-send (a retry) matches to its end.
    """
    hashes: list[int] = []
    previous = hash(seed)
    end = min(len(text), block_bytes * max_blocks)
    for start in range(0, end, block_bytes):
        previous = hash((previous, text[start:start + block_bytes]))
        hashes.append(previous)
    return hashes


class PrefixMap:
    """A bounded LRU map block hash -> the endpoints that were sent that prefix.

    `insert` touches a request's blocks from the last to the first, so the first blocks (the
    shared system prompt, the old turns) are the most recently used and evicted last: a chain
    loses its tail, never its head.
    """

    __slots__ = ("_entries", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(1, max_entries)
        self._entries: OrderedDict[int, tuple[str, ...]] = OrderedDict()

    @classmethod
    def for_memory(cls, max_bytes: int) -> PrefixMap:
        return cls(max_bytes // ENTRY_BYTES)

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, hashes: Sequence[int]) -> dict[str, int]:
        """Per endpoint, how many leading blocks of `hashes` it holds (endpoints with none absent).

        The walk stops at the first block nobody holds: a prefix cache serves only a prefix.
        """
        matched: dict[str, int] = {}
        entries = self._entries
        for i, h in enumerate(hashes, 1):
            holders = entries.get(h)
            if holders is None:
                break
            for name in holders:
                matched[name] = i
        return matched

    def insert(self, hashes: Sequence[int], endpoint: str) -> None:
        entries = self._entries
        for h in reversed(hashes):
            holders = entries.get(h)
            if holders is None:
                entries[h] = (endpoint,)
            else:
                if endpoint not in holders:
                    entries[h] = (*holders, endpoint)
                entries.move_to_end(h)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
