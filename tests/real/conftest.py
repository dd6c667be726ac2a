"""Fixtures of the real-backend tests: the tiny model, llama-servers, vLLM servers, fleetlb.

Slow things are session-scoped and cached across runs (see `python -m tests.real.setup`). A setup
that fails raises: the tests that needed it ERROR, they are never skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import openai
import pytest

from .gateway import Backend, start_gateway
from .llama import ensure_llama_server, start_llama_servers
from .process import ServerProcess
from .tinymodel import TinyModel, ensure_model
from .vllm import ensure_vllm, start_vllm_servers

# Seconds a real-backend test may take, fixture setup included: the first test to use vLLM pays
# for its start (about 20 s idle, minutes on a busy 2-core machine) and maybe its install.
REAL_TEST_TIMEOUT_S = 900
LLAMA_FLEET_SIZE = 2
VLLM_FLEET_SIZE = 2  # ~3 GB RAM each: never more than two at once
CLIENT_TIMEOUT_S = 120.0  # per SDK request; generation on a shared 2-core machine can be slow

StartLlama = Callable[[int], list[ServerProcess]]
StartGateway = Callable[[Sequence[Backend]], ServerProcess]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/real is `real` and gets the long timeout."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            if item.get_closest_marker("real") is None:
                raise pytest.UsageError(f"{item.nodeid}: tests/real tests must be marked real")
            item.add_marker(pytest.mark.timeout(REAL_TEST_TIMEOUT_S))


def sdk(url: str) -> openai.OpenAI:
    """The official SDK pointed at `url` (a backend or fleetlb), no retries of its own."""
    return openai.OpenAI(
        base_url=url + "/v1", api_key="sk-unused", max_retries=0, timeout=CLIENT_TIMEOUT_S
    )


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-logs")


@pytest.fixture(scope="session")
def tiny_model() -> TinyModel:
    return ensure_model()


@pytest.fixture(scope="session")
def llama_binary() -> Path:
    return ensure_llama_server()


@pytest.fixture(scope="session")
def llama_fleet(
    llama_binary: Path, tiny_model: TinyModel, logs_dir: Path
) -> Iterator[list[ServerProcess]]:
    """Two llama-servers shared by the whole session: tests must not kill them."""
    servers = start_llama_servers(llama_binary, tiny_model.gguf, LLAMA_FLEET_SIZE, logs_dir)
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def start_llama(llama_binary: Path, tiny_model: TinyModel, logs_dir: Path) -> Iterator[StartLlama]:
    """Private llama-servers for one test (to kill them); stopped when it ends."""
    started: list[ServerProcess] = []

    def start(count: int) -> list[ServerProcess]:
        servers = start_llama_servers(llama_binary, tiny_model.gguf, count, logs_dir)
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    return ensure_vllm()


@pytest.fixture(scope="session")
def vllm_fleet(
    vllm_python: Path, tiny_model: TinyModel, logs_dir: Path
) -> Iterator[list[ServerProcess]]:
    """Two vLLM servers, started once per session (each takes ~20 s and ~3 GB)."""
    servers = start_vllm_servers(vllm_python, tiny_model.hf_dir, VLLM_FLEET_SIZE, logs_dir)
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def fleetlb(tmp_path: Path) -> Iterator[StartGateway]:
    """Start fleetlb subprocesses in front of given backends; stopped by PID when the test ends."""
    started: list[ServerProcess] = []

    def start(backends: Sequence[Backend]) -> ServerProcess:
        gateway = start_gateway(backends, tmp_path)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
