"""The deterministic content a simulated backend produces: tokens, token counts, embeddings and the
one tool call it knows how to make. Pure: no I/O."""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

_SENTENCE = "the quick brown fox jumps over a lazy dog while seven small models share one fleet"
WORDS = tuple(_SENTENCE.split())  # the vocabulary, in the order answers use it
DEFAULT_MAX_TOKENS = 16  # tokens generated when the request sets no maximum
EMBEDDING_DIM = 8  # small on purpose: tests compare whole vectors
TOOL_ARGUMENTS = '{"location": "Paris"}'
TOOL_ARGUMENT_FRAGMENTS = ('{"location"', ': "Pa', 'ris"}')  # how the arguments are streamed
FALLBACK_TOOL_NAME = "get_weather"  # used when the offered tool has no usable name
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)

# Token i of every answer: the first word bare, the rest with a leading space, so joined text reads.
_SPACED = tuple(" " + w for w in WORDS)
_TOKEN_JSON = tuple(orjson.dumps(t) for t in _SPACED)  # pre-encoded for the streaming hot path
_FIRST_JSON = orjson.dumps(WORDS[0])

FinishReason = Literal["stop", "length", "tool_calls"]


def token(i: int) -> str:
    return WORDS[0] if i == 0 else _SPACED[i % len(WORDS)]


def token_json(i: int) -> bytes:
    """`token(i)` as a JSON string literal."""
    return _FIRST_JSON if i == 0 else _TOKEN_JSON[i % len(WORDS)]


def answer_text(n_tokens: int) -> str:
    """The text of an answer of `n_tokens` tokens: what a client joining the deltas gets."""
    return "".join(token(i) for i in range(n_tokens))


def count_tokens(text: str) -> int:
    """Words stand in for tokens; an empty prompt still costs one."""
    return max(1, len(text.split()))


def content_text(content: Any) -> str:
    """The text of a message `content`: a string, or a list of parts carrying `text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and _is_str(p.get("text"))
        )
    return ""


def messages_text(messages: Iterable[Any]) -> str:
    return " ".join(content_text(m.get("content")) for m in messages if isinstance(m, dict))


def last_user_text(messages: list[Any]) -> str:
    """The text of the last message if a user wrote it; "" when the last turn is a tool result,
    so an agent loop gets a text answer after its tool call instead of calling again."""
    if not messages or not isinstance(messages[-1], dict):
        return ""
    last = messages[-1]
    if last.get("role") != "user":
        return ""
    return content_text(last.get("content"))


def embedding(item: Any) -> list[float]:
    """A unit vector derived from a hash of the input: same input, same vector, on every backend."""
    raw = item if isinstance(item, str) else orjson.dumps(item).decode()
    digest = hashlib.blake2b(raw.encode(), digest_size=2 * EMBEDDING_DIM).digest()
    values = [(int.from_bytes(digest[i : i + 2], "big") / 32767.5) - 1.0 for i in range(0, 16, 2)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in values]


def embedding_bytes(vector: list[float]) -> bytes:
    """Little-endian float32, the layout OpenAI's `encoding_format: "base64"` carries."""
    return struct.pack(f"<{len(vector)}f", *vector)


@dataclass(slots=True, frozen=True)
class ToolCall:
    name: str
    arguments: str = TOOL_ARGUMENTS
    fragments: tuple[str, ...] = TOOL_ARGUMENT_FRAGMENTS


@dataclass(slots=True, frozen=True)
class Plan:
    """What one generation will produce."""

    n_tokens: int
    finish: FinishReason
    prompt_tokens: int
    tool_call: ToolCall | None = None
    reply: str | None = None  # a scripted answer (lb.sim.script) instead of the word sequence

    @property
    def completion_tokens(self) -> int:
        return len(self.tool_call.fragments) if self.tool_call else self.n_tokens

    def answer(self) -> str:
        """The whole text answer."""
        return answer_text(self.n_tokens) if self.reply is None else self.reply

    def pieces(self) -> list[str]:
        """The text answer as streamed, one piece per token."""
        if self.reply is None:
            return [token(i) for i in range(self.n_tokens)]
        words = self.reply.split(" ")
        return [words[0], *(" " + w for w in words[1:])]


def tool_name(tool: Any) -> str | None:
    """The name of a function tool in Chat (`function.name`) or Responses (`name`) shape."""
    if not isinstance(tool, dict):
        return None
    function = tool.get("function")
    name = function.get("name") if isinstance(function, dict) else tool.get("name")
    return name if _is_str(name) and name else None


def plan(max_tokens: int | None, tools: Any, user_text: str, prompt_tokens: int) -> Plan:
    """Tool call when tools are offered and the user asks about the weather; else text."""
    if isinstance(tools, list) and tools and _WEATHER.search(user_text):
        name = next((n for n in map(tool_name, tools) if n), FALLBACK_TOOL_NAME)
        return Plan(0, "tool_calls", prompt_tokens, ToolCall(name))
    if max_tokens is None:
        return Plan(DEFAULT_MAX_TOKENS, "stop", prompt_tokens)
    return Plan(max_tokens, "length", prompt_tokens)


def parse_max_tokens(value: Any) -> int | None:
    """A positive integer maximum, None when absent; ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a positive integer")
    return value


def _is_str(value: Any) -> bool:
    return isinstance(value, str)
