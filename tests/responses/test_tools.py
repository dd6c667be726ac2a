"""Every tool type of an agent client through translation, both ways: what the backend is offered
and how its calls come back (non-streaming here; streaming in test_stream)."""

import random
from typing import Any

import pytest
from openai.types.responses import Response

from lb.errors import BadRequest
from lb.responses.freeform import custom_arguments
from lb.responses.ids import IdMaker
from lb.responses.shape import problems
from lb.responses.tools import MAX_NAME, flat_name, tool_table
from lb.responses.translate import ChatRequest, to_response, translate_request

Json = dict[str, Any]
SPAWN = {"type": "function", "name": "spawn_agent", "description": "Spawn",
         "parameters": {"type": "object", "properties": {"task": {"type": "string"}}}}
NAMESPACE = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents",
             "tools": [SPAWN, {"type": "function", "name": "wait_agent"}]}
EXEC = {"type": "function", "name": "exec_command", "strict": False,
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}
PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Edit files",
              "format": {"type": "grammar", "syntax": "lark", "definition": "start: PATCH"}}
FREEFORM = {"type": "custom", "name": "js"}
WEB = {"type": "web_search", "external_web_access": True}
CODEX_TOOLS = [EXEC, NAMESPACE, PATCH_TOOL, FREEFORM, WEB]
PATCH_TEXT = '*** Begin Patch\n+print("hi")\n*** End Patch'


def translate(**request: Any) -> ChatRequest:
    return translate_request({"model": "m", "input": "hi", **request}, upstream_model="b")


def respond(tool_calls: list[Json], request: Json) -> Json:
    translation = translate(**request)
    chat = {"choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None,
                                     "tool_calls": tool_calls}}]}
    resp = to_response(chat, request=translation.echo({"model": "m", **request}),
                       response_id="resp_1", created_at=1, ids=IdMaker(random.Random(1)),
                       tools=translation.tools)
    assert problems(resp) == [], problems(resp)
    Response.model_validate(resp)  # the OpenAI SDK parses every item
    return resp


def call(name: str, arguments: str, call_id: str = "call_1") -> Json:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_the_backend_is_offered_functions_only() -> None:
    translation = translate(tools=CODEX_TOOLS, tool_choice="auto")
    offered = [t["function"] for t in translation.body["tools"]]
    assert [f["name"] for f in offered] == [
        "exec_command", "multi_agent_v1__spawn_agent", "multi_agent_v1__wait_agent",
        "apply_patch", "js"]
    assert offered[0] == {"name": "exec_command", "strict": False,
                          "parameters": EXEC["parameters"]}
    assert offered[1]["parameters"] == SPAWN["parameters"]
    custom = offered[3]
    assert custom["parameters"]["required"] == ["input"]
    assert custom["parameters"]["properties"]["input"]["type"] == "string"
    assert custom["description"].startswith("Edit files")
    assert "lark" in custom["description"] and "start: PATCH" in custom["description"]
    assert offered[4]["description"] == ""
    assert translation.dropped == ("tools[4]:web_search",)
    assert all(t["type"] == "function" for t in translation.body["tools"])


def test_the_response_echoes_only_the_tools_the_model_had() -> None:
    request = {"model": "m", "input": "hi", "tools": CODEX_TOOLS}
    assert translate(tools=CODEX_TOOLS).echo(request)["tools"] == CODEX_TOOLS[:4]
    plain = {"model": "m", "input": "hi", "tools": [EXEC]}
    assert translate(tools=[EXEC]).echo(plain) is plain


def test_a_namespaced_call_comes_back_with_its_namespace() -> None:
    resp = respond([call("multi_agent_v1__spawn_agent", '{"task":"x"}')],
                   {"tools": CODEX_TOOLS})
    item = resp["output"][0]
    assert (item["type"], item["name"], item["namespace"], item["arguments"],
            item["call_id"]) == ("function_call", "spawn_agent", "multi_agent_v1",
                                 '{"task":"x"}', "call_1")


def test_a_custom_call_comes_back_as_a_custom_tool_call() -> None:
    resp = respond([call("apply_patch", custom_arguments(PATCH_TEXT)), call("exec_command",
                    '{"cmd":"ls"}', "call_2")], {"tools": CODEX_TOOLS})
    patch, shell = resp["output"]
    assert {k: patch[k] for k in ("type", "name", "input", "call_id", "status")} == {
        "type": "custom_tool_call", "name": "apply_patch", "input": PATCH_TEXT,
        "call_id": "call_1", "status": "completed"}
    assert patch["id"].startswith("ctc_") and shell["id"].startswith("fc_")
    assert "namespace" not in patch and "namespace" not in shell
    assert (shell["type"], shell["name"]) == ("function_call", "exec_command")


def test_a_custom_call_whose_arguments_are_not_our_object_passes_them_as_input() -> None:
    resp = respond([call("js", "console.log(1)")], {"tools": CODEX_TOOLS})
    assert resp["output"][0]["input"] == "console.log(1)"


def test_a_call_of_an_undeclared_name_comes_back_as_it_is() -> None:
    resp = respond([call("made_up", "{}")], {"tools": CODEX_TOOLS})
    assert (resp["output"][0]["type"], resp["output"][0]["name"]) == ("function_call", "made_up")


def test_history_of_every_call_type_goes_back_under_its_wire_name() -> None:
    history = [
        {"type": "function_call", "call_id": "c1", "name": "spawn_agent",
         "namespace": "multi_agent_v1", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "spawned"},
        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": PATCH_TEXT},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": "Done!"},
        {"type": "custom_tool_call", "call_id": "c3", "name": "gone", "namespace": "ns",
         "input": "x"},
        {"type": "custom_tool_call_output", "call_id": "c3",
         "output": [{"type": "input_text", "text": "ok"}]},
    ]
    messages = translate(tools=CODEX_TOOLS, input=history).body["messages"]
    assert messages == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "multi_agent_v1__spawn_agent", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "spawned"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c2", "type": "function",
             "function": {"name": "apply_patch", "arguments": custom_arguments(PATCH_TEXT)}}]},
        {"role": "tool", "tool_call_id": "c2", "content": "Done!"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c3", "type": "function",
             "function": {"name": "ns__gone", "arguments": custom_arguments("x")}}]},
        {"role": "tool", "tool_call_id": "c3", "content": "ok"},
    ]


def test_images_in_a_tool_output_follow_as_a_user_message() -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    history = [
        {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "view_image", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1",
         "output": [{"type": "input_image", "image_url": png}]},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "two"}, {"type": "input_image",
                                                             "image_url": png}]},
        {"role": "user", "content": "what is in them?"},
    ]
    messages = translate(input=history).body["messages"]
    image = {"type": "image_url", "image_url": {"url": png}}
    assert [m["role"] for m in messages] == ["assistant", "tool", "tool", "user", "user"]
    assert messages[1]["content"].startswith("(the tool's output includes images")
    assert messages[2]["content"] == "two"
    assert messages[3] == {"role": "user", "content": [image, image]}
    assert messages[4] == {"role": "user", "content": "what is in them?"}


# (case, tool_choice, the Chat tool_choice, the wire names still offered)
CHOICES: list[tuple[str, Any, Any, list[str]]] = [
    ("a namespaced function", {"type": "function", "name": "spawn_agent",
                               "namespace": "multi_agent_v1"},
     {"type": "function", "function": {"name": "multi_agent_v1__spawn_agent"}}, []),
    ("a namespaced function by its wire name",
     {"type": "function", "name": "multi_agent_v1__wait_agent"},
     {"type": "function", "function": {"name": "multi_agent_v1__wait_agent"}}, []),
    ("a custom tool", {"type": "custom", "name": "apply_patch"},
     {"type": "function", "function": {"name": "apply_patch"}}, []),
    ("allowed tools, hosted ones dropped",
     {"type": "allowed_tools", "mode": "required",
      "tools": [{"type": "custom", "name": "apply_patch"}, {"type": "web_search"}]},
     "required", ["apply_patch"]),
]


@pytest.mark.parametrize(("choice", "chat_choice", "offered"), [c[1:] for c in CHOICES],
                         ids=[c[0] for c in CHOICES])
def test_tool_choice(choice: Any, chat_choice: Any, offered: list[str]) -> None:
    body = translate(tools=CODEX_TOOLS, tool_choice=choice).body
    assert body["tool_choice"] == chat_choice
    if offered:
        assert [t["function"]["name"] for t in body["tools"]] == offered


@pytest.mark.parametrize("choice", [
    {"type": "function", "name": "spawn_agent"},  # the namespace is part of its name
    {"type": "custom", "name": "exec_command"},  # a function, not a custom tool
    {"type": "mcp", "server_label": "x"},
    {"type": "allowed_tools", "mode": "required", "tools": [{"type": "web_search"}]},
])
def test_a_tool_choice_forcing_what_the_backend_cannot_have_is_a_400(choice: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        translate(tools=CODEX_TOOLS, tool_choice=choice)
    assert caught.value.param == "tool_choice"


def test_allowed_hosted_tools_only_in_auto_mode_offer_nothing() -> None:
    translation = translate(tools=CODEX_TOOLS, tool_choice={
        "type": "allowed_tools", "mode": "auto", "tools": [{"type": "web_search"}]})
    assert "tools" not in translation.body and "tool_choice" not in translation.body
    assert translation.dropped == ("tools[4]:web_search", "tool_choice.tools[0]:web_search")


def test_hosted_tools_inside_a_namespace_are_dropped() -> None:
    table = tool_table([{"type": "namespace", "name": "ns", "tools": [WEB, SPAWN]}])
    assert [f["function"]["name"] for f in table.functions] == ["ns__spawn_agent"]
    assert table.dropped == ["tools[0].tools[0]:web_search"]


@pytest.mark.parametrize(("name", "namespace"), [
    ("spawn_agent", "n" * 60),
    ("t" * 70, "ns"),
    ("get.weather", "mcp server"),
])
def test_long_or_odd_flat_names_stay_within_64_characters_and_distinct(
        name: str, namespace: str) -> None:
    flat = flat_name(name, namespace)
    assert len(flat) <= MAX_NAME
    assert all(c.isalnum() or c in "_-" for c in flat)
    assert flat != flat_name(name + "x", namespace)
    table = tool_table([{"type": "namespace", "name": namespace,
                         "tools": [{"type": "function", "name": name}]}])
    resp_item = table.lookup(flat)
    assert (resp_item.name, resp_item.namespace) == (name, namespace)


@pytest.mark.parametrize(("tools", "param"), [
    ([{"type": "namespace", "tools": [SPAWN]}], "tools[0].name"),
    ([{"type": "namespace", "name": "ns"}], "tools[0].tools"),
    ([{"type": "namespace", "name": "ns", "tools": [{"type": "function"}]}],
     "tools[0].tools[0].name"),
    ([{"type": "custom"}], "tools[0].name"),
    ([{"type": "custom", "name": "x", "format": {"type": "grammar"}}],
     "tools[0].format.definition"),
    ([{"type": "custom", "name": "x", "format": {"type": "yaml"}}], "tools[0].format"),
    ([EXEC, EXEC], "tools[1].name"),
])
def test_malformed_tools_are_a_400_naming_the_field(tools: list[Json], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        translate(tools=tools)
    assert caught.value.param == param
