"""Codex CLI (npm @openai/codex, pinned) runs whole agent turns through fleetlb against the
simulated backend: translate mode (a chat-only backend) and native mode.

The backend is scripted (lb.sim.script) to call Codex's shell tool; Codex runs the command, sends
its output back, and the backend's answer quotes it: the output reaches Codex's final message
only if every hop worked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from lb.sim.script import ToolScript
from tests.agents.codex import codex_binary, codex_exec
from tests.conftest import GatewayFactory, Sim, SimFactory, endpoint

KEY = "sk-codex"
SHELL_TOOL = "exec_command"  # what Codex 0.171 offers (older versions: "shell")
# The shell computes the marker, so it is in the output only if the command really ran.
COMMAND = "echo codex-ran-$((6 * 7))"
MARKER = "codex-ran-42"
SCRIPT = ToolScript(tools=(SHELL_TOOL,), arguments=orjson.dumps({"cmd": COMMAND}).decode(),
                    reply_prefix="The tool said: ")


@pytest.fixture(scope="session")
def codex() -> Path:
    return codex_binary()


def requests(sim: Sim, path: str) -> list[dict[str, Any]]:
    return [r.json() for r in sim.behavior.requests if r.path == path and r.method == "POST"]


async def run_turn(codex: Path, tmp_path: Path, start_sim: SimFactory,
                   start_gateway: GatewayFactory, mode: str,
                   provider_extra: str = "") -> tuple[Sim, str]:
    sim = await start_sim("m1", responses=mode == "native")
    sim.behavior.tool_script = SCRIPT
    gw = await start_gateway({"server": {"api_keys": [KEY]},
                              "endpoints": [endpoint("a", sim, responses=mode)]})
    run = await codex_exec(codex, tmp_path / "home", tmp_path / "work", gw.url + "/v1", KEY,
                           "Run the command and tell me what it printed.",
                           provider_extra=provider_extra)
    assert run.returncode == 0, run.stderr[-3000:]
    assert MARKER in run.stdout, (run.stdout, run.stderr[-3000:])
    return sim, run.stdout


async def test_translate_mode_a_whole_agent_turn(
        codex: Path, tmp_path: Path, start_sim: SimFactory, start_gateway: GatewayFactory,
        log_lines: Any) -> None:
    sim, stdout = await run_turn(codex, tmp_path, start_sim, start_gateway, "translate")
    assert "The tool said:" in stdout
    first, second = requests(sim, "/v1/chat/completions")[:2]
    offered = {t["function"]["name"] for t in first["tools"]}
    assert SHELL_TOOL in offered
    assert "multi_agent_v1__spawn_agent" in offered  # Codex's namespace tool, flattened
    assert all(t["type"] == "function" for t in first["tools"])  # web_search is not offered
    assert "client_metadata" not in first and "include" not in first
    call = second["messages"][-2]["tool_calls"][0]
    assert (call["function"]["name"], orjson.loads(call["function"]["arguments"])) == (
        SHELL_TOOL, {"cmd": COMMAND})
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == call["id"]
    assert MARKER in tool_message["content"]
    access = [line for line in log_lines() if line.get("path") == "/v1/responses"]
    assert access and all(line["status"] == 200 for line in access)
    assert "client_metadata" in access[0]["dropped"] and ":web_search" in access[0]["dropped"]


async def test_native_mode_a_whole_agent_turn(
        codex: Path, tmp_path: Path, start_sim: SimFactory,
        start_gateway: GatewayFactory) -> None:
    sim, _ = await run_turn(codex, tmp_path, start_sim, start_gateway, "native")
    first, second = requests(sim, "/v1/responses")[:2]
    # native mode passes Codex's body through: every key and tool as Codex sent it
    assert {"client_metadata", "include", "prompt_cache_key", "store"} <= first.keys()
    assert {t["type"] for t in first["tools"]} >= {"function", "namespace", "web_search"}
    assert second["input"][-1]["type"] == "function_call_output"
    assert MARKER in second["input"][-1]["output"]
    assert requests(sim, "/v1/chat/completions") == []


@pytest.mark.parametrize("mode", ["translate", "native"])
async def test_websocket_mode_a_whole_agent_turn(
        codex: Path, tmp_path: Path, start_sim: SimFactory, start_gateway: GatewayFactory,
        log_lines: Any, mode: str) -> None:
    # Codex's WebSocket transport: `response.create` messages (with `stream: true`, which a
    # WebSocket turn ignores) on GET /v1/responses, every turn on the one connection
    sim, _ = await run_turn(codex, tmp_path, start_sim, start_gateway, mode,
                            provider_extra="supports_websockets = true")
    backend = "/v1/chat/completions" if mode == "translate" else "/v1/responses"
    got = requests(sim, backend)
    # Codex first sends a warm-up `generate: false`: fleetlb answers it without a backend
    assert len(got) == 2
    lines = [line for line in log_lines() if line.get("path") == "/v1/responses"]
    assert [line["method"] for line in lines] == ["GET"]
