"""What a simulated backend is told at start (`SimOptions`) and the knobs and records tests use at
run time (`SimBehavior`, `RecordedRequest`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from lb.sim.script import ToolScript

if TYPE_CHECKING:
    from lb.sim.kvcache import KvCacheOptions

SimKind = Literal["openai", "vllm", "ollama"]
DEFAULT_RECORD_LIMIT = 10_000  # recorded requests kept; bounds memory under a bench's load


@dataclass(slots=True)
class SimOptions:
    """Fixed for the life of one simulated backend."""

    models: tuple[str, ...] = ("sim-model",)
    kind: SimKind = "openai"
    ttft_ms: float = 0.0  # sleep before the first token (after the headers when streaming)
    tokens_per_s: float = 0.0  # pacing between tokens; 0 = as fast as possible
    responses: bool = True  # serve /v1/responses (off: 404 like a chat-only server)
    fail_rate: float = 0.0  # probability that a model request gets 500
    seed: int | None = None  # seeds the random.Random that draws fail_rate
    name: str = "sim"
    kv_cache: KvCacheOptions | None = None  # model a KV cache and prefill queue (lb/sim/kvcache)


@dataclass(slots=True, frozen=True)
class RecordedRequest:
    """One request exactly as the simulated backend received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(slots=True)
class SimBehavior:
    """Knobs a test flips while the backend runs, and what the backend saw.

    The fault knobs `fail_status`, `fail_rate` (in SimOptions) and `die_after_chunks` apply to
    model requests (chat, completions, responses, embeddings, Ollama chat/generate/embed), after
    validation; discovery routes (/v1/models, /health, /api/tags, ...) keep answering, like a box
    whose GPU is sick. `hang` applies to every route, like a wedged server process.
    """

    fail_status: int | None = None  # answer model requests with this status + an error body
    die_after_chunks: int | None = None  # streams: close the transport after N chunks, no ending
    hang: bool = False  # accept requests and never answer until the client goes (or hang is reset)
    split_writes: bool = False  # write each stream chunk in several pieces, splitting \r from \n
    crlf: bool = False  # SSE line endings are \r\n
    requests: list[RecordedRequest] = field(default_factory=list)
    disconnects: int = 0  # requests whose client went away before the answer was finished
    active: int = 0  # requests being handled now
    completed: int = 0  # requests answered in full (error answers included)
    record_limit: int = DEFAULT_RECORD_LIMIT  # keep at most this many recent requests; 0: none
    tool_script: ToolScript | None = None  # a scripted agent turn (lb.sim.script)

    def record(self, request: RecordedRequest) -> None:
        """Keep `request`, dropping the oldest beyond `record_limit` in batches (amortised O(1)),
        so a long-running simulator or a bench does not grow without bound."""
        if self.record_limit <= 0:
            return
        self.requests.append(request)
        if len(self.requests) >= 2 * self.record_limit:
            del self.requests[: len(self.requests) - self.record_limit]

    def paths(self) -> list[str]:
        """The paths of the recorded requests, in arrival order."""
        return [r.path for r in self.requests]
