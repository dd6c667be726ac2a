"""`python -m probes --config PATH` as a subprocess against fake backends on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from probes.__main__ import COLUMNS, main, redact_url, render_table
from tests.fake_probe_backends import FakeBackend, closed_port, running

REPO = Path(__file__).resolve().parents[1]
VLLM_METRICS = "vllm:num_requests_running 1\nvllm:num_requests_waiting 2\n"


async def run_cli(config: Path, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "probes",
        "--config",
        str(config),
        cwd=config.parent,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_config(tmp_path: Path, *endpoints: str, probes: str = "timeout = 1.0") -> Path:
    path = tmp_path / "fleetlb.toml"
    path.write_text(f"[probes]\n{probes}\n" + "".join(endpoints), encoding="utf-8")
    return path


def endpoint_toml(name: str, url: str, kind: str, extra: str = "") -> str:
    return f'[[endpoints]]\nname = "{name}"\nurl = "{url}"\nkind = "{kind}"\n{extra}\n'


def table_rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    assert lines[0].split() == list(COLUMNS)
    return {line.split()[0]: line.split() for line in lines[1:]}


async def test_all_healthy_prints_the_table_and_exits_0(tmp_path: Path) -> None:
    ollama = FakeBackend("ollama", models=["qwen2:latest"])
    vllm = FakeBackend(
        "vllm",
        models=["llama"],
        metrics=VLLM_METRICS,
        responses=(400, '{"error": "model is required"}'),
    )
    async with running(ollama, vllm):
        config = write_config(
            tmp_path,
            endpoint_toml("gpu-a", ollama.url, "ollama"),
            endpoint_toml("gpu-b", vllm.url, "vllm", 'api_key_env = "GPU_B_KEY"'),
        )
        code, out, err = await run_cli(config, GPU_B_KEY="sk-hidden")
    assert (code, err) == (0, "")
    rows = table_rows(out)
    assert rows["gpu-a"][1:4] == ["ollama", ollama.url, "healthy"]
    assert rows["gpu-a"][5:] == ["qwen2,qwen2:latest", "no", "-"]
    assert rows["gpu-b"][5:] == ["llama", "yes", "-"]
    assert ("GET", "/health", "Bearer sk-hidden") in vllm.seen
    assert "sk-hidden" not in out
    assert ("GET", "/", None) not in ollama.seen


async def test_a_dead_endpoint_exits_1(tmp_path: Path) -> None:
    alive = FakeBackend("openai", models=["m"])
    dead_url = f"http://user:secret@127.0.0.1:{await closed_port()}"
    async with running(alive):
        config = write_config(
            tmp_path,
            endpoint_toml("alive", alive.url, "openai"),
            endpoint_toml("dead", dead_url, "openai"),
        )
        code, out, _ = await run_cli(config)
    assert code == 1
    rows = table_rows(out)
    assert rows["alive"][3] == "healthy"
    assert rows["dead"][2:4] == [dead_url.replace("user:secret@", ""), "unhealthy"]
    assert "/v1/models" in rows["dead"][7]
    assert "secret" not in out


async def test_hung_endpoint_is_down_within_the_probe_timeout(tmp_path: Path) -> None:
    hung = FakeBackend("vllm", hang=True)
    async with running(hung):
        config = write_config(
            tmp_path, endpoint_toml("hung", hung.url, "vllm"), probes="timeout = 0.3"
        )
        code, out, _ = await run_cli(config)
    assert code == 1
    assert "no answer within 0.3s" in out


async def test_config_error_exits_2_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(endpoint_toml("x", "http://127.0.0.1:1", "llama"), encoding="utf-8")
    code, out, err = await run_cli(path)
    assert (code, out) == (2, "")
    assert err.startswith(f"{path}: endpoints[0].kind: must be one of")


# the same entry point in-process, for the remaining exit paths (a subprocess costs a second each)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[probes]\nrise = 0\n", "probes.rise: must be >= 1"),
        ("[probes\n", "not valid TOML"),
        ("[probes]\ncolour = 1\n", "probes.colour: unknown key"),
        (
            endpoint_toml("x", "http://127.0.0.1:1", "openai", 'api_key_env = "NOPE_KEY"'),
            "endpoints[0].api_key_env: environment variable NOPE_KEY is not set",
        ),
    ],
)
def test_config_errors_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    body: str,
    message: str,
) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    path = tmp_path / "bad.toml"
    path.write_text(body, encoding="utf-8")
    assert main(["--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}: {message}" in captured.err


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_no_endpoints_is_not_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(write_config(tmp_path))]) == 0
    assert capsys.readouterr().out.split() == list(COLUMNS)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://10.0.0.1:11434", "http://10.0.0.1:11434"),
        ("http://u:p@10.0.0.1:11434/x", "http://10.0.0.1:11434/x"),
        ("https://token@host", "https://host"),
        ("http://a:b@c@host:1", "http://host:1"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_render_table_aligns_columns() -> None:
    rows = [
        ("a", "ollama", "u", "healthy", "1.0", "m", "yes", "-"),
        ("long-name", "vllm", "u", "unhealthy", "12.5", "-", "?", "boom"),
    ]
    lines = render_table(rows).splitlines()
    assert [line.split() for line in lines] == [list(COLUMNS), *map(list, rows)]
    assert {
        line.index(kind) for line, kind in zip(lines, ["KIND", "ollama", "vllm"], strict=True)
    } == {len("long-name  ")}
