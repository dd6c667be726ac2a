"""Two real vLLM replicas behind fleetlb in native Responses mode: vLLM keeps each response on
the replica that made it, so every `previous_response_id` must be routed back there.
"""

from __future__ import annotations

import pytest

from .conftest import StartGateway
from .gateway import Backend
from .llama import MODEL_ALIAS
from .process import ServerProcess
from .wire import post_json, request

pytestmark = pytest.mark.real

MAX_OUTPUT_TOKENS = 8
TURNS = 3
# Chains to start until one has begun on each replica (fresh requests are balanced).
MAX_CHAINS = 12


def vllm_backends(servers: list[ServerProcess]) -> list[Backend]:
    return [
        Backend(name=f"vllm-{i}", url=s.url, kind="vllm", responses="native")
        for i, s in enumerate(servers)
    ]


def run_chain(gateway_url: str) -> list[tuple[str, str]]:
    """TURNS responses, each continuing the previous one; (response id, endpoint) per turn."""
    turns: list[tuple[str, str]] = []
    previous: str | None = None
    for turn in range(TURNS):
        body: dict[str, object] = {
            "model": MODEL_ALIAS,
            "input": f"Turn {turn}",
            "max_output_tokens": MAX_OUTPUT_TOKENS,
            "store": True,
        }
        if previous is not None:
            body["previous_response_id"] = previous
        reply = post_json(gateway_url + "/v1/responses", body)
        assert reply.status == 200, (turn, reply.body[:500])
        response = reply.json()
        assert response.get("previous_response_id") == previous
        previous = response["id"]
        turns.append((response["id"], reply.headers["x-fleetlb-endpoint"]))
    return turns


def test_chains_stay_on_their_replica(
    vllm_fleet: list[ServerProcess], fleetlb: StartGateway
) -> None:
    gateway = fleetlb(vllm_backends(vllm_fleet))
    started_on: set[str] = set()
    for _ in range(MAX_CHAINS):
        turns = run_chain(gateway.url)
        endpoints = {endpoint for _, endpoint in turns}
        assert len(endpoints) == 1, f"a chain moved between replicas: {turns}"
        started_on |= endpoints
        if len(started_on) == len(vllm_fleet):
            break
    assert started_on == {"vllm-0", "vllm-1"}, "chains never started on one of the replicas"


def test_retrieving_a_response_reaches_its_owner(
    vllm_fleet: list[ServerProcess], fleetlb: StartGateway
) -> None:
    gateway = fleetlb(vllm_backends(vllm_fleet))
    for response_id, endpoint in run_chain(gateway.url):
        reply = request("GET", f"{gateway.url}/v1/responses/{response_id}")
        assert reply.status == 200, reply.body[:500]
        assert reply.json()["id"] == response_id
        assert reply.headers["x-fleetlb-endpoint"] == endpoint
