"""fleetlb itself as a subprocess (`python -m lb serve --config ...`) in front of real backends."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .llama import MODEL_ALIAS
from .process import HOST, ServerProcess, free_port, start_server

REPO_ROOT = Path(__file__).resolve().parents[2]
# Seconds the gateway gets to answer /healthz (an import and a bind: about a second).
START_TIMEOUT_S = 60.0
# Probe interval in seconds: short, so discovery and a dead backend show within a test.
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 5.0
# Seconds until the backend's response headers: a loaded 2-core machine answers late sometimes.
FIRST_BYTE_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Backend:
    """One `[[endpoints]]` entry."""

    name: str
    url: str
    kind: str = "openai"  # ollama | vllm | openai
    responses: str = "auto"  # auto | native | translate | disabled
    models: tuple[str, ...] = (MODEL_ALIAS,)
    extra: dict[str, object] = field(default_factory=dict)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def config_text(backends: Sequence[Backend], port: int, extra: str = "") -> str:
    """The TOML config of a gateway on `port` in front of `backends` (then `extra` TOML)."""
    lines = [
        "[server]",
        f"host = {_toml_value(HOST)}",
        f"port = {port}",
        "",
        "[timeouts]",
        f"first_byte = {FIRST_BYTE_TIMEOUT_S}",
        "",
        "[probes]",
        f"interval = {PROBE_INTERVAL_S}",
        f"timeout = {PROBE_TIMEOUT_S}",
        "",
        "[store]",  # per gateway process: never a responses.db shared in the checkout
        'kind = "memory"',
    ]
    for backend in backends:
        entry: dict[str, object] = {
            "name": backend.name,
            "url": backend.url,
            "kind": backend.kind,
            "responses": backend.responses,
            "models": list(backend.models),
            **backend.extra,
        }
        lines += ["", "[[endpoints]]", *(f"{k} = {_toml_value(v)}" for k, v in entry.items())]
    return "\n".join(lines) + "\n" + extra


def start_gateway(backends: Sequence[Backend], folder: Path, extra: str = "") -> ServerProcess:
    """Write the config into `folder`, start fleetlb on a free port, wait for /healthz."""
    port = free_port()
    config = folder / f"fleetlb-{port}.toml"
    config.write_text(config_text(backends, port, extra))
    argv = [sys.executable, "-m", "lb", "serve", "--config", str(config)]
    server = start_server("fleetlb", argv, port, folder, cwd=REPO_ROOT)
    server.wait_healthy("/healthz", START_TIMEOUT_S)
    return server
