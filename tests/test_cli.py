"""The `fleetlb` command as users run it: check, serve (config and demo) as real processes."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import ollama
import openai

from lb.__main__ import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


CONFIG = """
[server]
api_keys = ["sk-client-secret"]
admin_key = "adm-secret"

[[endpoints]]
name = "gpu-a"
url = "http://127.0.0.1:9"
weight = 3
api_key = "sk-upstream-secret"
models = ["llama3.1:8b"]

[[endpoints]]
name = "gpu-b"
url = "http://127.0.0.1:10"
priority = 1
models = ["llama3.1:8b", "qwen"]

[[models]]
name = "llama3"
upstream = "llama3.1:8b"
strategy = "priority"
"""


def test_check_prints_pools_without_secrets(tmp_path: Path, capsys: object) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(CONFIG)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "llama3 -> llama3.1:8b [priority]: gpu-a, gpu-b" in out
    assert "qwen [cache_aware; embeddings least_in_flight]: gpu-b" in out
    assert "secret" not in out
    assert "api key set" in out


def test_check_reports_error_with_key_path(tmp_path: Path, capsys: object) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG.replace("weight = 3", "weight = 0"))
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err.strip() == f"{path}: endpoints[0].weight: must be > 0"


async def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            assert proc.poll() is None, "fleetlb exited early"
            try:
                async with s.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError("fleetlb did not start")


async def test_serve_demo_answers_openai_sdk() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lb", "serve", "--demo", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_ready(url, proc)
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as c:
            stream = await c.chat.completions.create(
                model="llama3", messages=[{"role": "user", "content": "hi"}], stream=True,
                max_tokens=3)
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream
                            if ch.choices])
            assert len(text.split()) == 3
            ids = {m.id for m in (await c.models.list()).data}
            assert {"llama3", "llama3.1:8b", "qwen2.5:7b", "nomic-embed"} <= ids
        native = ollama.AsyncClient(host=url)  # the demo backends are simulated Ollama boxes
        try:
            chat = await native.chat(model="llama3", messages=[{"role": "user", "content": "hi"}],
                                     options={"num_predict": 2})
            assert len(chat.message.content.split()) == 2
            assert "nomic-embed:latest" in {m.model for m in (await native.list()).models}
        finally:
            await native.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b'"event":"listening"' in out
    assert b"fleetlb demo" in err


async def test_serve_config_logs_json_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(CONFIG)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lb", "serve", "--config", str(path),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path)
    try:
        await _wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"secret" not in out
    assert b'"event":"access"' in out and b'"path":"/healthz"' in out


def test_serve_refuses_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = -1\n")
    proc = subprocess.run([sys.executable, "-m", "lb", "serve", "--config", str(path)],
                          capture_output=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert b"server.port: must be >= 0" in proc.stderr
