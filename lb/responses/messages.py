"""Responses input items -> Chat Completions messages (the `messages` of a translated request).

Every item type and content part the specification defines for input is translated, refused with
a BadRequest naming it, or (the calls of hosted tools, which a Chat backend never had) dropped and
listed in `dropped`. Reasoning items are left out without a word (below). A tool output must
answer a call made earlier in the conversation: anything else is a 400, as OpenAI answers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lb.errors import BadRequest
from lb.responses.freeform import custom_arguments
from lb.responses.tools import ToolTable

Expander = Callable[[dict[str, Any]], list[dict[str, Any]]]
Message = dict[str, Any]

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
PHASES = frozenset({"commentary", "final_answer"})
TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}
# vLLM joins the text parts of one message with a newline when a chat template wants a string;
# doing the same here gives every backend the same prompt.
TEXT_PART_SEPARATOR = "\n"
CALLS = frozenset({"function_call", "custom_tool_call"})
CALL_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})
# Items of hosted tools (from a natively served history): nothing a Chat backend could replay.
HOSTED_ITEMS = frozenset({
    "web_search_call", "file_search_call", "computer_call", "computer_call_output",
    "code_interpreter_call", "image_generation_call", "local_shell_call",
    "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
    "apply_patch_call_output", "mcp_call", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "tool_search_call", "tool_search_output",
})
IMAGES_FOLLOW = "(the tool's output includes images; they follow as the next user message)"


class MessageBuilder:
    """Appends chat messages for Responses items, in order.

    Consecutive function_call items (and the assistant message right before them) become one
    assistant message with several tool_calls, as Chat Completions expects.
    """

    __slots__ = ("_calls", "_expand", "_images", "_tools", "dropped", "messages")

    def __init__(
        self, expand_compaction: Expander | None = None, tools: ToolTable | None = None
    ) -> None:
        self._expand = expand_compaction
        self._tools = tools or ToolTable()
        self._calls: set[str] = set()  # call ids made so far: what a tool output may answer
        self._images: list[Message] = []  # image parts of tool outputs, for the next user turn
        self.dropped: list[str] = []
        self.messages: list[Message] = []

    def add_text(self, role: str, text: str) -> None:
        self._append({"role": role, "content": text})

    def finish(self) -> list[Message]:
        """The messages, with any images of the last tool outputs after them."""
        self._flush_images()
        return self.messages

    def _append(self, message: Message) -> None:
        if message["role"] != "tool":
            self._flush_images()
        self.messages.append(message)

    def _flush_images(self) -> None:
        """Chat tool messages carry text only; their images go in a user message after them."""
        if self._images:
            self.messages.append({"role": "user", "content": self._images})
            self._images = []

    def add(self, item: Any, param: str) -> None:
        if not isinstance(item, dict):
            raise BadRequest("an input item must be an object", param=param)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            self._message(item, param)
        elif kind in CALLS:
            self._call(item, kind, param)
        elif kind in CALL_OUTPUTS:
            self._call_output(item, param)
        elif kind == "compaction":
            self._compaction(item, param)
        elif kind in HOSTED_ITEMS:
            self.dropped.append(f"{param}:{kind}")
        elif kind != "reasoning":
            raise BadRequest(
                f"input items of type {kind!r:.80} are not supported", param=f"{param}.type"
            )
        # A reasoning item is kept in the stored conversation, its encrypted_content untouched,
        # but not sent back: Chat Completions has no standard field for earlier reasoning, and
        # chat templates drop it from earlier turns anyway.

    def _message(self, item: dict[str, Any], param: str) -> None:
        role = ROLES.get(str(item.get("role")))
        if role is None:
            raise BadRequest(f"unknown message role {item.get('role')!r}", param=f"{param}.role")
        if item.get("phase") is not None and item["phase"] not in PHASES:
            raise BadRequest(f"unknown phase {item['phase']!r}", param=f"{param}.phase")
        content = item.get("content")
        if isinstance(content, str):
            self._append({"role": role, "content": content})
        elif isinstance(content, list):
            parts = [_part(p, role, f"{param}.content[{i}]") for i, p in enumerate(content)]
            self._append({"role": role, "content": _collapse(parts)})
        else:
            raise BadRequest(
                "message content must be a string or an array", param=f"{param}.content"
            )

    def _call(self, item: dict[str, Any], kind: str, param: str) -> None:
        """A function or custom tool call, under the Chat name its tool is sent with."""
        name = _text(item, "name", param)
        namespace = item.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise BadRequest("namespace must be a string", param=f"{param}.namespace")
        if kind == "custom_tool_call":
            wire = self._tools.wire_name(name, namespace, "custom")
            arguments = custom_arguments(_text(item, "input", param, empty=True))
        else:
            wire = self._tools.wire_name(name, namespace)
            arguments = _text(item, "arguments", param, empty=True)
        call_id = _text(item, "call_id", param)
        self._calls.add(call_id)
        call = {"id": call_id, "type": "function", "function": {"name": wire,
                                                                 "arguments": arguments}}
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant" and not self._images:
            last.setdefault("tool_calls", []).append(call)
        else:
            self._append({"role": "assistant", "content": None, "tool_calls": [call]})

    def _call_output(self, item: dict[str, Any], param: str) -> None:
        call_id = _text(item, "call_id", param)
        if call_id not in self._calls:
            raise BadRequest(f"No tool call found for function call output with call_id "
                             f"{call_id!r:.80}.", param=f"{param}.call_id")
        output = item.get("output")
        if isinstance(output, list):
            texts: list[str] = []
            for index, part in enumerate(output):
                image = _tool_output_part(part, f"{param}.output[{index}]")
                if isinstance(image, str):
                    texts.append(image)
                else:
                    self._images.append(image)
            if self._images and not texts:
                texts.append(IMAGES_FOLLOW)
            output = TEXT_PART_SEPARATOR.join(texts)
        elif not isinstance(output, str):
            raise BadRequest(
                f"{item['type']}.output must be a string or an array", param=f"{param}.output"
            )
        self._append({"role": "tool", "tool_call_id": call_id, "content": output})

    def _compaction(self, item: dict[str, Any], param: str) -> None:
        if self._expand is None:
            raise BadRequest("compaction items are not accepted here", param=param)
        try:
            items = self._expand(item)
        except BadRequest as exc:
            raise BadRequest(exc.message, param=f"{param}.encrypted_content") from exc
        for inner in items:
            self.add(inner, param)


def _text(item: dict[str, Any], key: str, param: str, *, empty: bool = False) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not (value or empty):
        raise BadRequest(f"{key} must be a non-empty string", param=f"{param}.{key}")
    return value


def _part(part: Any, role: str, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    text_key = TEXT_PARTS.get(str(kind))
    if text_key is not None:
        value = part.get(text_key)
        if not isinstance(value, str):
            raise BadRequest(f"{kind} parts need a string {text_key}", param=f"{param}.{text_key}")
        return {"type": "text", "text": value}
    if kind in ("input_image", "input_file") and role != "user":
        raise BadRequest(f"{kind} parts are only accepted in user messages", param=f"{param}.type")
    if kind == "input_image":
        return _image(part, param)
    if kind == "input_file":
        return _file(part, param)
    raise BadRequest(f"content parts of type {kind!r} are not supported", param=f"{param}.type")


def _image(part: dict[str, Any], param: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        raise BadRequest(
            "input_image needs an image_url (an http(s) or data: URL); file ids are not supported",
            param=f"{param}.image_url",
        )
    image: dict[str, Any] = {"url": url}
    if part.get("detail") is not None:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file(part: dict[str, Any], param: str) -> dict[str, Any]:
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        # fetching file_url would make the gateway an open proxy; file ids need a file store
        raise BadRequest(
            "input_file needs inline file_data; file_url and file_id are not supported",
            param=f"{param}.file_data",
        )
    file: dict[str, Any] = {"file_data": data}
    if isinstance(part.get("filename"), str):
        file["filename"] = part["filename"]
    return {"type": "file", "file": file}


def _collapse(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only content as one string (what every backend accepts for every role), else parts."""
    if all(p["type"] == "text" for p in parts):
        return TEXT_PART_SEPARATOR.join(p["text"] for p in parts)
    return parts


def _tool_output_part(part: Any, param: str) -> str | Message:
    """A tool output's text, or an image part for the user message that follows the outputs."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if isinstance(text, str):
            return text
    elif kind == "input_image":
        return _image(part, param)
    raise BadRequest(
        "a tool's output can hold text and images over Chat Completions", param=param
    )
