"""Chat Completions stream -> Open Responses events: a state machine fed parsed chat chunks, and
the SSE encoding of the events it makes.

It runs once per upstream chunk on the hot path, so a delta costs one small dict and no copies;
texts are kept as pieces and joined once, when their item closes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from lb.responses.freeform import InputDecoder
from lb.responses.ids import IdMaker
from lb.responses.output import (
    finish_status,
    logprobs_of,
    message_item,
    reasoning_item,
    reasoning_text,
    text_part,
    usage_of,
)
from lb.responses.shape import EVENT_TYPES, complete_response
from lb.responses.tools import ToolTable, call_item
from lb.sse import DONE

Json = dict[str, Any]

__all__ = ["DONE", "ChatToResponsesStream", "encode"]

_EVENT_HEADS = {kind: f"event: {kind}\ndata: ".encode() for kind in EVENT_TYPES}
# response.output_text.delta, encoded around its three variable parts (text_delta's fast path);
# the keys in the order the generic path's dict has them
_TEXT_DELTA_HEAD = (b"event: response.output_text.delta\ndata: "
                    b'{"type":"response.output_text.delta","sequence_number":')
_TEXT_DELTA_TAIL = b',"logprobs":[]}\n\n'
_PLAIN_DELTA_KEYS = frozenset({"content", "role"})
_CALLS = frozenset({"function_call", "custom_tool_call"})
CUSTOM_ID_PREFIX = "ctc"  # OpenAI's prefix for custom tool call items


def encode(event: Json) -> bytes:
    """One SSE event: `event: <type>`, one line of JSON data, a blank line."""
    kind = event["type"]
    head = _EVENT_HEADS.get(kind) or f"event: {kind}\ndata: ".encode()
    return head + orjson.dumps(event) + b"\n\n"


def _final_item(item: _Item, text: str, status: str, tools: ToolTable) -> Json:
    if item.kind in _CALLS:
        return call_item(tools, item.item_id, item.call_id, item.name, text, status)
    if item.kind == "message":
        return message_item(item.item_id, [text_part(text, item.logprobs)], status)
    return reasoning_item(item.item_id, text, status)


@dataclass(slots=True)
class _Item:
    """An output item being streamed: its identity and what it has said so far."""

    kind: str  # "message" | "reasoning" | "function_call" | "custom_tool_call"
    item_id: str
    output_index: int
    pieces: list[str] = field(default_factory=list)  # a call's: its Chat arguments
    logprobs: list[Json] = field(default_factory=list)
    call_id: str = ""
    name: str = ""  # a call's Chat function name (the ToolTable knows the client's)
    is_open: bool = False  # output_item.added was sent and output_item.done not yet
    decoder: InputDecoder | None = None  # a custom tool call's input, out of its arguments
    text_at: bytes = b""  # a message's text delta event between sequence_number and its text


class ChatToResponsesStream:
    """Feed it parsed chat.completion.chunk dicts; it returns Responses events (dicts) in the
    specification's order, sequence_number 0, 1, 2... Call start() first, then feed() per chunk,
    then finish() at `[DONE]` or the end of the body, or fail() when the backend breaks.
    """

    def __init__(
        self,
        request: Json,
        *,
        response_id: str,
        created_at: int,
        ids: IdMaker,
        clock: Callable[[], float],
        tools: ToolTable | None = None,
    ) -> None:
        self._ids = ids
        self._clock = clock
        self._tools = tools or ToolTable()
        self._base = complete_response(
            {
                "id": response_id,
                "created_at": created_at,
                "status": "in_progress",
                "completed_at": None,
                "output": [],
                "usage": None,
                "service_tier": "default",
            },
            request,
        )
        self._seq = 0
        self._output: list[Json] = []
        self._open: _Item | None = None
        self._calls: dict[Any, _Item] = {}  # chat tool_call index -> its item
        self._last_call: Any = None
        self._finish_reason: Any = None
        self._usage: Any = None
        self._final: Json | None = None
        self.is_started = False

    @property
    def response(self) -> Json:
        """The final response object once finished or failed; until then, a snapshot."""
        if self._final is not None:
            return self._final
        return {**self._base, "output": list(self._output)}

    @property
    def is_done(self) -> bool:
        return self._final is not None

    def _next(self) -> int:
        seq = self._seq
        self._seq = seq + 1
        return seq

    def start(self) -> list[Json]:
        if self.is_started:
            return []
        self.is_started = True
        return [
            {
                "type": kind,
                "sequence_number": self._next(),
                "response": {**self._base, "output": []},
            }
            for kind in ("response.created", "response.in_progress")
        ]

    def feed(self, chunk: Json) -> list[Json]:
        if self._final is not None:
            return []
        events = self.start() if not self.is_started else []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        error = chunk.get("error")
        if error is not None or chunk.get("object") == "error":  # an error event mid-stream
            error = error if isinstance(error, dict) else chunk
            return events + self.fail(
                str(error.get("code") or "upstream_error"),
                str(error.get("message") or "the backend failed"),
            )
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                self._delta(delta, choice, events)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def text_delta(self, chunk: Json) -> bytes | None:
        """The chunk nearly every one of a stream is (more text for the open message, and
        nothing else) as its response.output_text.delta event, encoded; None for any other
        chunk, which feed() then takes. Same event, same bytes, a third of the work."""
        choices = chunk.get("choices")
        if type(choices) is not list or not choices or chunk.get("usage") \
                or chunk.get("error") is not None or chunk.get("object") == "error":
            return None
        choice = choices[0]
        delta = choice.get("delta") if type(choice) is dict else None
        if type(delta) is not dict or choice.get("finish_reason") or choice.get("logprobs"):
            return None
        content = delta.get("content")
        if type(content) is not str or not content or (len(delta) > 1 and any(
                value and key not in _PLAIN_DELTA_KEYS for key, value in delta.items())):
            return None
        return self.more_text(content)

    def more_text(self, content: str) -> bytes | None:
        """`content` added to the open message, as its encoded delta event: text_delta's end,
        for a caller that knows the chunk says nothing else (TranslatedFraming's event shapes);
        None when no message is open."""
        item = self._open
        if item is None or item.kind != "message" or self._final is not None:
            return None
        item.pieces.append(content)
        seq = self._seq
        self._seq = seq + 1
        return b"%b%d%b%b%b" % (_TEXT_DELTA_HEAD, seq, item.text_at, orjson.dumps(content),
                                _TEXT_DELTA_TAIL)

    def _delta(self, delta: Json, choice: Json, events: list[Json]) -> None:
        reasoning = reasoning_text(delta)
        if reasoning:
            self._text("reasoning", reasoning, None, events)
        content = delta.get("content")
        if content and isinstance(content, str):
            self._text("message", content, choice.get("logprobs"), events)
        for call in delta.get("tool_calls") or ():
            self._tool_call(call, events)

    def _text(self, kind: str, text: str, logprobs: Any, events: list[Json]) -> None:
        item = self._open
        if item is None or item.kind != kind:
            item = self._begin(kind, events)
        item.pieces.append(text)
        if kind == "reasoning":
            events.append(
                {
                    "type": "response.reasoning.delta",
                    "sequence_number": self._next(),
                    "item_id": item.item_id,
                    "output_index": item.output_index,
                    "content_index": 0,
                    "delta": text,
                }
            )
            return
        found = logprobs_of(logprobs) if logprobs else []
        item.logprobs += found
        events.append(
            {
                "type": "response.output_text.delta",
                "sequence_number": self._next(),
                "item_id": item.item_id,
                "output_index": item.output_index,
                "content_index": 0,
                "delta": text,
                "logprobs": found,
            }
        )

    def _begin(self, kind: str, events: list[Json]) -> _Item:
        """Close the open item, open a message or reasoning item: item added, part added."""
        self._close(events)
        index = len(self._output)
        if kind == "message":
            item = _Item(kind, self._ids.message(), index)
            item.text_at = b',"item_id":%b,"output_index":%d,"content_index":0,"delta":' % (
                orjson.dumps(item.item_id), index)
            added, part = message_item(item.item_id, [], "in_progress"), text_part("")
        else:
            item = _Item(kind, self._ids.reasoning(), index)
            added = reasoning_item(item.item_id, None, "in_progress")
            part = {"type": "reasoning_text", "text": ""}
        self._open_item(item, added, events)
        events.append(
            {
                "type": "response.content_part.added",
                "sequence_number": self._next(),
                "item_id": item.item_id,
                "output_index": index,
                "content_index": 0,
                "part": part,
            }
        )
        return item

    def _open_item(self, item: _Item, added: Json, events: list[Json]) -> None:
        item.is_open = True
        self._open = item
        self._output.append(added)
        events.append(
            {
                "type": "response.output_item.added",
                "sequence_number": self._next(),
                "output_index": item.output_index,
                "item": added,
            }
        )

    def _tool_call(self, call: Json, events: list[Json]) -> None:
        key = self._call_key(call)
        function = call.get("function") or {}
        item = self._calls.get(key)
        if item is None:
            item = self._calls[key] = _Item("function_call", self._ids.function_call(), -1)
        elif item.output_index >= 0 and not item.is_open:
            events += self.fail(
                "upstream_error",
                "the backend interleaved the fragments of "
                "several tool calls; they cannot be streamed in order",
            )
            return
        item.call_id = item.call_id or call.get("id") or ""
        item.name = item.name or function.get("name") or ""
        arguments = function.get("arguments") or ""
        if item.output_index < 0:  # not announced yet: wait for the name it must carry
            item.pieces.append(arguments)
            if item.name:
                self._announce(item, events)
            return
        if arguments:
            item.pieces.append(arguments)
            self._arguments_delta(item, arguments, events)

    def _call_key(self, call: Json) -> Any:
        """Chat's tool call index; backends that omit it start a new call with each new id."""
        key = call.get("index")
        if key is None:
            last = self._calls.get(self._last_call)
            is_new = last is None or (call.get("id") and call["id"] != last.call_id)
            key = len(self._calls) if is_new else self._last_call
        self._last_call = key
        return key

    def _announce(self, item: _Item, events: list[Json]) -> None:
        self._close(events)
        item.output_index = len(self._output)
        item.call_id = item.call_id or self._ids.call()
        if self._tools.lookup(item.name).kind == "custom":
            item.kind, item.decoder = "custom_tool_call", InputDecoder()
            item.item_id = self._ids.make(CUSTOM_ID_PREFIX)  # no event has named it yet
        self._open_item(
            item,
            call_item(self._tools, item.item_id, item.call_id, item.name, "", "in_progress"),
            events,
        )
        buffered = "".join(item.pieces)
        item.pieces = [buffered] if buffered else []
        if buffered:
            self._arguments_delta(item, buffered, events)

    def _arguments_delta(self, item: _Item, delta: str, events: list[Json]) -> None:
        kind = "response.function_call_arguments.delta"
        if item.decoder is not None:  # a custom tool: the input its arguments spell so far
            kind, delta = "response.custom_tool_call_input.delta", item.decoder.feed(delta)
            if not delta:
                return
        events.append({
            "type": kind,
            "sequence_number": self._next(),
            "item_id": item.item_id,
            "output_index": item.output_index,
            "delta": delta,
        })

    def _close(self, events: list[Json], status: str = "completed") -> None:
        """The open item's closing events, in order; its final form goes into the output."""
        item = self._open
        if item is None:
            return
        self._open = None
        item.is_open = False
        text = "".join(item.pieces)
        final = _final_item(item, text, status, self._tools)
        at = {"item_id": item.item_id, "output_index": item.output_index}
        if item.decoder is not None:
            rest = item.decoder.finish(text)
            if rest:
                events.append({"type": "response.custom_tool_call_input.delta",
                               "sequence_number": self._next(), **at, "delta": rest})
            events.append({"type": "response.custom_tool_call_input.done",
                           "sequence_number": self._next(), **at, "input": final["input"]})
        elif item.kind == "function_call":
            events.append(
                {
                    "type": "response.function_call_arguments.done",
                    "sequence_number": self._next(),
                    **at,
                    "arguments": text,
                    "name": final["name"],
                }
            )
        else:
            kind = "output_text" if item.kind == "message" else "reasoning"
            done: Json = {
                "type": f"response.{kind}.done",
                "sequence_number": self._next(),
                **at,
                "content_index": 0,
                "text": text,
            }
            if item.kind == "message":
                done["logprobs"] = item.logprobs
            events.append(done)
            events.append(
                {
                    "type": "response.content_part.done",
                    "sequence_number": self._next(),
                    **at,
                    "content_index": 0,
                    "part": final["content"][0],
                }
            )
        self._output[item.output_index] = final
        events.append(
            {
                "type": "response.output_item.done",
                "sequence_number": self._next(),
                "output_index": item.output_index,
                "item": final,
            }
        )

    def finish(self) -> list[Json]:
        """The stream ended normally: close the open item, then response.completed (or
        response.incomplete when the backend stopped at its token limit).
        """
        if self._final is not None:
            return []
        events = self.start() if not self.is_started else []
        status, details = finish_status(self._finish_reason)
        for item in self._calls.values():
            if item.output_index < 0:  # a call whose name never came: show it all the same
                self._announce(item, events)
        self._close(events, "incomplete" if status == "incomplete" else "completed")
        if not self._output:  # an empty answer is still an (empty) message, as in to_response
            self._begin("message", events)
            self._close(events)
        self._final = {
            **self._base,
            "status": status,
            "incomplete_details": details,
            "completed_at": int(self._clock()),
            "output": self._output,
            "usage": usage_of(self._usage),
        }
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        events.append({"type": kind, "sequence_number": self._next(), "response": self._final})
        return events

    def fail(
        self, code: str, message: str, *, error_type: str = "server_error", param: str | None = None
    ) -> list[Json]:
        """The backend broke mid-stream: an `error` event, then response.failed."""
        if self._final is not None:
            return []
        events = self.start() if not self.is_started else []
        item = self._open
        if item is not None:  # what the open item said so far, marked incomplete
            self._open = None
            self._output[item.output_index] = _final_item(
                item, "".join(item.pieces), "incomplete", self._tools
            )
        events.append(
            {
                "type": "error",
                "sequence_number": self._next(),
                "error": {"type": error_type, "code": code, "message": message, "param": param},
            }
        )
        self._final = {
            **self._base,
            "status": "failed",
            "output": self._output,
            "error": {"code": code, "message": message},
            "usage": usage_of(self._usage),
        }
        events.append(
            {"type": "response.failed", "sequence_number": self._next(), "response": self._final}
        )
        return events
