"""Config validation: every problem names the file, the key path and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lb.config import load_config, parse_config
from lb.errors import ConfigError

EP = {"name": "a", "url": "http://127.0.0.1:1"}


@pytest.mark.parametrize(("raw", "loc", "reason"), [
    ({"endpoints": [EP, {**EP, "name": "b", "weight": 0}]}, "endpoints[1].weight", "must be > 0"),
    ({"endpoints": [{**EP, "wieght": 2}]}, "endpoints[0].wieght", "unknown key"),
    ({"endpoints": [{**EP, "kind": "tgi"}]}, "endpoints[0].kind", "must be one of"),
    ({"endpoints": [{**EP, "url": "10.0.0.1:11434"}]}, "endpoints[0].url", "http://"),
    ({"endpoints": [{"url": EP["url"]}]}, "endpoints[0].name", "required"),
    ({"endpoints": [{**EP, "max_in_flight": -1}]}, "endpoints[0].max_in_flight", ">= 0"),
    ({"endpoints": [{**EP, "weight": "heavy"}]}, "endpoints[0].weight", "number"),
    ({"endpoints": [EP, EP]}, "endpoints[1].name", "duplicate endpoint name 'a'"),
    ({"endpoints": [EP], "models": [{"name": "m", "endpoints": ["a", "zz"]}]},
     "models[0].endpoints[1]", "no endpoint named 'zz'"),
    ({"endpoints": [EP], "models": [{"name": "m"}, {"name": "m"}]}, "models[1].name",
     "duplicate model name"),
    ({"endpoints": [EP], "models": [{"name": "qwen"}, {"name": "qwen:latest"}]},
     "models[1].name", "duplicate model name 'qwen:latest'"),
    ({"ollama": {"allow_admin": "yes please"}}, "ollama.allow_admin", "bool"),
    ({"ollama": {"fanout_timeout": 0}}, "ollama.fanout_timeout", "must be > 0"),
    ({"ollama": {"allow_pull": True}}, "ollama.allow_pull", "unknown key"),
    ({"endpoints": [EP], "models": [{"name": "m", "strategy": "random"}]},
     "models[0].strategy", "must be one of"),
    ({"server": {"port": 70000}}, "server.port", "<= 65535"),
    ({"timeouts": {"idle": 0}}, "timeouts.idle", "must be > 0"),
    ({"retry": {"max_attempts": 0}}, "retry.max_attempts", ">= 1"),
    ({"sever": {}}, "sever", "unknown key"),
    ({"server": {"admin_key_env": "NOPE_UNSET"}}, "server.admin_key_env", "NOPE_UNSET is not set"),
    ({"endpoints": [{**EP, "api_key_env": "NOPE_UNSET"}]}, "endpoints[0].api_key_env",
     "is not set"),
])
def test_rejected_with_key_path(raw: dict[str, Any], loc: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="fleet.toml", env={})
    text = str(info.value)
    assert text.startswith(f"fleet.toml: {loc}: "), text
    assert reason in text


def test_defaults_and_secrets_resolved(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nsk-b\n\nsk-c\n")
    path = tmp_path / "fleet.toml"
    path.write_text(f"""
[server]
api_keys = ["sk-a"]
api_keys_file = "{keys.name}"
admin_key_env = "ADMIN"

[[endpoints]]
name = "gpu-a"
url = "http://127.0.0.1:11434/"
api_key_env = "GPU_A"
models = ["llama3.1:8b"]
""")
    config = load_config(path, env={"ADMIN": "s3cret-adm", "GPU_A": "sk-up"})
    assert config.server.client_keys() == {"sk-a", "sk-b", "sk-c"}
    assert config.server.admin_key is not None
    assert config.server.admin_key.get_secret_value() == "s3cret-adm"
    ep = config.endpoints[0]
    assert ep.api_key is not None and ep.api_key.get_secret_value() == "sk-up"
    assert ep.base_url == "http://127.0.0.1:11434"
    assert (ep.kind, ep.weight, ep.priority, ep.max_in_flight, ep.responses) == \
        ("openai", 1, 0, 0, "auto")
    assert config.timeouts.first_byte == 60.0 and config.retry.max_attempts == 3
    # secrets never print
    assert "sk-up" not in repr(config) and "s3cret-adm" not in str(config.server)


def test_no_keys_means_open() -> None:
    assert parse_config({}, env={}).server.api_keys is None


@pytest.mark.parametrize(("text", "reason"), [
    ("[server\nport = 1", "not valid TOML"),
    ("", None),
])
def test_toml_syntax(tmp_path: Path, text: str, reason: str | None) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    if reason is None:
        assert load_config(path, env={}).endpoints == ()
        return
    with pytest.raises(ConfigError, match=reason) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_missing_keys_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.api_keys_file: cannot read"):
        parse_config({"server": {"api_keys_file": "missing"}}, env={}, base=tmp_path)


def test_ollama_section_defaults_to_no_admin_calls() -> None:
    config = parse_config({}, env={})
    assert config.ollama.allow_admin is False and config.ollama.fanout_timeout == 5.0
    assert parse_config({"ollama": {"allow_admin": True}}, env={}).ollama.allow_admin is True
