"""The tools of a translated request, pure: which the backend can call (function tools, custom
tools, the functions inside namespace tools), under which Chat function name, and back.

A Chat Completions backend knows only functions with names of at most 64 characters. Namespaced
functions are flattened to `<namespace>__<name>`; custom (freeform) tools become a function with
one string parameter `input`. Hosted tools (web_search, file_search, mcp, ...) run on OpenAI's
side, so the backend never sees them: they are dropped, and a tool_choice that forces one is a 400.
The ToolTable maps every wire name back to what the client declared, so calls come back as the
client expects (`function_call` with `namespace`, or `custom_tool_call`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from lb.errors import BadRequest
from lb.responses.freeform import INPUT_KEY, custom_input
from lb.responses.output import function_call_item

Json = dict[str, Any]
Kind = Literal["function", "custom"]

MAX_NAME = 64  # Chat Completions' limit on a function name (OpenAI: ^[a-zA-Z0-9_-]{1,64}$)
NAMESPACE_JOIN = "__"
_HASH_CHARS = 10  # hex digits of blake2b that keep a shortened name unique
_NAME_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CUSTOM_PARAMETERS: Json = {
    "type": "object",
    "properties": {INPUT_KEY: {"type": "string", "description": "The tool's whole input"}},
    "required": [INPUT_KEY],
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True)
class WireTool:
    """What the client declared behind one Chat function name."""

    kind: Kind
    name: str
    namespace: str | None = None


@dataclass(slots=True)
class ToolTable:
    """The tools of one request: the Chat `tools` to send and the way back from a wire name."""

    functions: list[Json] = field(default_factory=list)  # Chat `tools`
    by_wire: dict[str, WireTool] = field(default_factory=dict)
    served: list[Json] = field(default_factory=list)  # the client's tools the backend got
    dropped: list[str] = field(default_factory=list)

    def wire_name(self, name: str, namespace: str | None = None, kind: Kind = "function") -> str:
        """The Chat name of a declared tool; for one not declared (an old call in the history),
        the name the scheme gives it."""
        for wire, tool in self.by_wire.items():
            if tool.name == name and tool.namespace == namespace and tool.kind == kind:
                return wire
        return flat_name(name, namespace)

    def lookup(self, wire: str) -> WireTool:
        """What a call of `wire` is; a name the client never declared comes back as it is."""
        return self.by_wire.get(wire) or WireTool("function", wire)

    @property
    def is_plain(self) -> bool:
        """Only plain function tools: every wire name is the client's own name."""
        return all(t.kind == "function" and t.namespace is None for t in self.by_wire.values())


def flat_name(name: str, namespace: str | None) -> str:
    """`<namespace>__<name>`, or a shortened form with a hash when that breaks Chat's rules."""
    if namespace is None:
        return name
    joined = f"{namespace}{NAMESPACE_JOIN}{name}"
    if _NAME_OK.match(joined):
        return joined
    digest = hashlib.blake2b(joined.encode(), digest_size=_HASH_CHARS // 2).hexdigest()
    room = MAX_NAME - len(NAMESPACE_JOIN) - 1 - _HASH_CHARS
    head = re.sub(r"[^A-Za-z0-9_-]", "_", namespace)[: room // 3]
    tail = re.sub(r"[^A-Za-z0-9_-]", "_", name)[: room - len(head)]
    return f"{head}{NAMESPACE_JOIN}{tail}_{digest}"


def tool_table(tools: Any) -> ToolTable:
    """The table for a request's `tools` (a list, checked by the caller); raises BadRequest."""
    table = ToolTable()
    for index, tool in enumerate(tools or []):
        param = f"tools[{index}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "namespace":
            _add_namespace(table, tool, param)
            table.served.append(tool)
        elif kind in ("function", "custom"):
            _add(table, tool, None, param)
            table.served.append(tool)
        else:
            if not isinstance(kind, str) or not kind:
                raise BadRequest("a tool needs a type", param=f"{param}.type")
            table.dropped.append(f"{param}:{kind}")
    return table


def _add_namespace(table: ToolTable, tool: Json, param: str) -> None:
    namespace = tool.get("name")
    if not isinstance(namespace, str) or not namespace:
        raise BadRequest("a namespace tool needs a name", param=f"{param}.name")
    inner = tool.get("tools")
    if not isinstance(inner, list):
        raise BadRequest("a namespace tool needs a list of tools", param=f"{param}.tools")
    for index, member in enumerate(inner):
        kind = member.get("type") if isinstance(member, dict) else None
        if kind in ("function", "custom"):
            _add(table, member, namespace, f"{param}.tools[{index}]")
        else:
            table.dropped.append(f"{param}.tools[{index}]:{kind}")


def _add(table: ToolTable, tool: Json, namespace: str | None, param: str) -> None:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"a {tool['type']} tool needs a name", param=f"{param}.name")
    wire = flat_name(name, namespace)
    if wire in table.by_wire:
        raise BadRequest(f"two tools are named {wire!r}", param=f"{param}.name")
    kind: Kind = "custom" if tool["type"] == "custom" else "function"
    table.by_wire[wire] = WireTool(kind, name, namespace)
    function: Json = {"name": wire}
    if kind == "custom":
        function["description"] = _custom_description(tool, param)
        function["parameters"] = _CUSTOM_PARAMETERS
    else:
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
    table.functions.append({"type": "function", "function": function})


def _custom_description(tool: Json, param: str) -> str:
    """What the model needs to call a freeform tool through a function: its description, and the
    grammar its input must follow, if any."""
    text = tool.get("description") or ""
    fmt = tool.get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") in (None, "text")):
        return text
    if not isinstance(fmt, dict) or fmt.get("type") != "grammar":
        raise BadRequest("a custom tool's format is text or grammar", param=f"{param}.format")
    syntax, definition = fmt.get("syntax"), fmt.get("definition")
    if not isinstance(definition, str):
        raise BadRequest("a grammar format needs a definition", param=f"{param}.format.definition")
    return (f"{text}\n\nPass the whole input as the string `{INPUT_KEY}`; it must match this "
            f"{syntax} grammar:\n{definition}").lstrip()


# ---- the way back: a Chat tool call -> the client's output item ----


def call_item(table: ToolTable, item_id: str, call_id: str, wire: str, arguments: str,
              status: str = "completed") -> Json:
    """The output item for a Chat tool call of `wire` with its (whole) arguments."""
    tool = table.lookup(wire)
    if tool.kind == "custom":
        item: Json = {"type": "custom_tool_call", "id": item_id, "call_id": call_id,
                      "name": tool.name, "input": custom_input(arguments), "status": status}
    else:
        item = function_call_item(item_id, call_id, tool.name, arguments, status)
    if tool.namespace is not None:
        item["namespace"] = tool.namespace
    return item


# ---- tool_choice ----


def chat_tool_choice(choice: Any, table: ToolTable) -> tuple[Any, set[str] | None]:
    """The Chat tool_choice for a Responses one, and for allowed_tools the wire names that stay
    offered (None: all). A choice that forces a tool the backend cannot have is a 400."""
    if choice is None or choice in ("none", "auto"):
        return choice, None
    if choice == "required":
        if not table.functions:
            raise BadRequest("tool_choice 'required' forces a tool call, but no tool the backend "
                             "can call was declared (hosted tools are not served in translate "
                             "mode)", param="tool_choice")
        return choice, None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("function", "custom"):
        return {"type": "function", "function": {"name": _forced(table, choice, kind)}}, None
    if kind == "allowed_tools":
        return _allowed(choice, table)
    if isinstance(kind, str):
        raise BadRequest(f"tool_choice forces the hosted tool {kind!r:.80}, which a Chat "
                         "Completions backend cannot have", param="tool_choice")
    raise BadRequest(f"unsupported tool_choice {choice!r:.200}", param="tool_choice")


def _forced(table: ToolTable, choice: Json, kind: Kind, param: str = "tool_choice") -> str:
    """The wire name of the declared tool a choice names (by name and namespace, or wire name)."""
    name, namespace = choice.get("name"), choice.get("namespace")
    for wire, tool in table.by_wire.items():
        if tool.kind == kind and ((tool.name == name and tool.namespace == namespace) or
                                  (wire == name and namespace is None)):
            return wire
    raise BadRequest(f"tool_choice names an undeclared {kind} tool {name!r:.80}", param=param)


def _allowed(choice: Json, table: ToolTable) -> tuple[Any, set[str]]:
    names: set[str] = set()
    entries = choice.get("tools")
    if not isinstance(entries, list) or not entries:
        raise BadRequest("allowed_tools needs a list of tools", param="tool_choice.tools")
    for index, entry in enumerate(entries):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind in ("function", "custom"):
            names.add(_forced(table, entry, kind, "tool_choice"))
        else:
            table.dropped.append(f"tool_choice.tools[{index}]:{kind}")
    mode = choice.get("mode") or "auto"
    if mode not in ("auto", "required"):
        raise BadRequest(f"unsupported allowed_tools mode {mode!r:.80}", param="tool_choice.mode")
    if mode == "required" and not names:
        raise BadRequest("allowed_tools with mode 'required' names no tool the backend can call",
                         param="tool_choice")
    return mode, names
