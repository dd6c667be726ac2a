"""The key table and the `[[keys]]` config (pure): lookup by digest, model globs, the default
entry, keys_file, and every refusal with its key path."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from lb.config import Config, load_config, parse_config
from lb.errors import ConfigError, Unauthorized
from lb.teams.table import KeyTable, Team


def table(raw: dict[str, Any], env: dict[str, str] | None = None) -> KeyTable:
    return KeyTable.from_config(parse_config(raw, env=env or {}))


def keys(*entries: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"keys": list(entries), **top}


def test_each_key_finds_its_team_by_its_secret() -> None:
    t = table(keys({"name": "a", "key": "sk-a"}, {"name": "b", "key_env": "KEY_B"},
                   {"name": "c", "key_sha256": hashlib.sha256(b"sk-c").hexdigest().upper()}),
              env={"KEY_B": "sk-b"})
    assert [t.identify(f"Bearer sk-{n}").name for n in "abc"] == ["a", "b", "c"]
    assert t.identify("bearer  sk-a ").name == "a"  # scheme is case-insensitive, spaces stripped
    assert [team.name for team in t.teams] == ["a", "b", "c"]
    assert not t.is_open


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer sk-x", "Basic sk-a", "sk-a",
                                    "Bearer sk-a-and-more", "Bearer SK-A"])
def test_anything_else_is_unauthorized_without_saying_whose_key_nearly_matched(
        header: str | None) -> None:
    t = table(keys({"name": "a", "key": "sk-a"}))
    with pytest.raises(Unauthorized) as caught:
        t.identify(header)
    assert "sk-a" not in caught.value.message


def test_server_api_keys_are_members_of_the_default_entry() -> None:
    t = table({"server": {"api_keys": ["sk-1", "sk-2"]}, **keys({"name": "a", "key": "sk-a"})})
    assert t.identify("Bearer sk-1").name == t.identify("Bearer sk-2").name == "default"
    assert [team.name for team in t.teams] == ["default", "a"]
    assert t.identify("Bearer sk-1").limits.is_unlimited  # as before: no limits, every model


def test_a_default_entry_gives_api_keys_limits_and_may_have_a_key_of_its_own() -> None:
    t = table({"server": {"api_keys": ["sk-1"]},
               **keys({"name": "default", "rpm": 5, "models": ["m*"]},
                      {"name": "x", "key": "sk-x"})})
    team = t.identify("Bearer sk-1")
    assert (team.name, team.limits.rpm, team.allows("m1"), team.allows("q")) == \
        ("default", 5, True, False)
    t2 = table(keys({"name": "default", "key": "sk-d", "tpm": 9}))
    assert t2.identify("Bearer sk-d").limits.tpm == 9


def test_no_keys_at_all_is_an_open_gateway_of_one_default_team() -> None:
    t = table({})
    assert t.is_open and t.identify(None).name == "default"
    # a default entry without a key limits everyone of an open gateway
    t2 = table(keys({"name": "default", "rpm": 3}))
    assert t2.is_open and t2.identify("Bearer whatever").limits.rpm == 3


def test_empty_api_keys_is_closed_not_open() -> None:
    t = table({"server": {"api_keys": []}})
    assert not t.is_open
    with pytest.raises(Unauthorized):
        t.identify("Bearer anything")


@pytest.mark.parametrize(("patterns", "model", "allowed"), [
    (None, "anything", True),
    (["llama3*"], "llama3.1:8b", True),
    (["llama3*"], "qwen2.5:7b", False),
    (["qwen2.5:7b"], "qwen2.5:7b", True),
    (["qwen2.5:7b"], "qwen2.5", False),
    (["qwen"], "qwen:latest", True),  # one model, two spellings
    (["qwen:latest"], "qwen:latest", True),
    (["m?"], "m1", True),
    (["m[12]"], "m3", False),
    (["*"], "", True),
    ([], "m1", False),  # an empty list: no model at all
    (["LLAMA*"], "llama3", False),  # names are case-sensitive, as backends treat them
])
def test_model_globs(patterns: list[str] | None, model: str, allowed: bool) -> None:
    team = Team("t", models=tuple(patterns) if patterns is not None else None)
    assert team.allows(model) is allowed
    assert team.allows(model) is allowed  # and the cached answer agrees


def test_keys_file_holds_more_keys_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "keys.toml").write_text('[[keys]]\nname = "filed"\nkey = "sk-f"\nrpm = 7\n')
    (tmp_path / "fleet.toml").write_text('keys_file = "keys.toml"\n\n[[keys]]\nname = "inline"\n'
                                         'key = "sk-i"\n')
    config = load_config(tmp_path / "fleet.toml", env={})
    t = KeyTable.from_config(config)
    assert (t.identify("Bearer sk-f").name, t.identify("Bearer sk-f").limits.rpm) == ("filed", 7)
    assert t.identify("Bearer sk-i").name == "inline"


def refusal(raw: dict[str, Any], env: dict[str, str] | None = None,
            base: Path | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env=env or {}, base=base)
    return str(caught.value)


@pytest.mark.parametrize(("raw", "expected"), [
    (keys({"name": "a"}), "keys[0]: give one of key, key_env, key_sha256"),
    (keys({"name": "a", "key": "x", "key_env": "X"}),
     "keys[0]: give one of key, key_env, key_sha256 (not key and key_env)"),
    (keys({"name": "a", "key_sha256": "abc"}), "keys[0].key_sha256: must be the 64 hex digits"),
    (keys({"name": "a", "key": "x", "rpm": 0}), "keys[0].rpm: must be >= 1"),
    (keys({"name": "a", "key": "x", "priority": "vip"}), "keys[0].priority: must be one of"),
    (keys({"name": "a", "key": "x", "budget": 3}), "keys[0].budget: unknown key"),
    (keys({"name": "a", "key": "x"}, {"name": "a", "key": "y"}),
     "keys[1].name: duplicate key name 'a'"),
    (keys({"name": "a", "key_env": "NOPE"}),
     "keys[0].key_env: environment variable NOPE is not set"),
    (keys({"name": "a", "key": "same"}, {"name": "b", "key": "same"}),
     "keys.b: the same key as 'a'"),
    ({"server": {"api_keys": ["same"]}, **keys({"name": "b", "key": "same"})},
     "keys.b: the same key as 'default'"),
    (keys({"name": "a", "key": "x"}, keys_file="missing.toml"), "keys_file: cannot read"),
])
def test_bad_keys_are_refused_with_their_path(raw: dict[str, Any], expected: str,
                                               tmp_path: Path) -> None:
    message = refusal(raw, base=tmp_path)
    assert expected in message
    assert "same" not in message.replace("the same key", "")  # a secret is never quoted


def test_a_bad_keys_file_is_refused_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "keys.toml").write_text('[[keys]]\nname = "f"\nkey = "k"\nrpm = -1\n')
    assert "keys_file: keys[0].rpm: must be >= 1" in refusal({"keys_file": "keys.toml"},
                                                             base=tmp_path)
    (tmp_path / "keys.toml").write_text('[server]\nport = 1\n')
    assert "keys_file: server: unknown key" in refusal({"keys_file": "keys.toml"},
                                                       base=tmp_path)
    (tmp_path / "keys.toml").write_text('[[keys]\n')
    assert "is not valid TOML" in refusal({"keys_file": "keys.toml"}, base=tmp_path)


def test_secrets_are_not_kept_by_the_table_nor_printed_by_the_config() -> None:
    config: Config = parse_config(keys({"name": "a", "key": "sk-secret-a"}), env={})
    assert "sk-secret-a" not in repr(config) and "sk-secret-a" not in str(config.keys)
    t = KeyTable.from_config(config)
    assert "sk-secret-a" not in repr(t.teams)
