"""The [redis] section, `[store] kind = "redis"` and what `fleetlb check` says about them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lb.__main__ import main
from lb.config import parse_config
from lb.errors import ConfigError
from lb.reload import diff_configs, keep_restart_only

URL = "redis://:hunter2-secret@10.0.0.5:6379/0"


@pytest.mark.parametrize("url", [URL, "rediss://user:pw@redis.internal:6380/1",
                                 "unix:///run/redis/redis.sock?db=2"])
def test_accepted_urls(url: str) -> None:
    config = parse_config({"redis": {"url": url}, "store": {"kind": "redis"}})
    assert config.redis is not None and config.redis.url is not None
    assert config.redis.url.get_secret_value() == url
    assert config.redis.key_prefix == "fleetlb:" and config.redis.timeout == 0.25
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)


def test_url_from_the_environment() -> None:
    config = parse_config({"redis": {"url_env": "FLEETLB_REDIS_URL", "key_prefix": "gw2:"}},
                          env={"FLEETLB_REDIS_URL": URL})
    assert config.redis is not None and config.redis.url is not None
    assert config.redis.url.get_secret_value() == URL


@pytest.mark.parametrize(("raw", "env", "loc", "reason"), [
    ({"redis": {}}, {}, "redis", "set url or url_env"),
    ({"redis": {"url_env": "NOPE_UNSET"}}, {}, "redis.url_env", "NOPE_UNSET is not set"),
    ({"redis": {"url": "http://:hunter2-secret@x/"}}, {}, "redis.url", "redis://"),
    ({"redis": {"url_env": "R"}}, {"R": "memcached://:hunter2-secret@x"}, "redis.url",
     "redis://"),
    ({"redis": {"url": URL, "timeout": 0}}, {}, "redis.timeout", "must be > 0"),
    ({"store": {"kind": "redis"}}, {}, "store.kind", "needs a [redis] section"),
    ({"limits": {"shared": True}}, {}, "limits.shared", "needs a [redis] section"),
    ({"store": {"kind": "etcd"}}, {}, "store.kind", "must be one of"),
])
def test_refused(raw: dict[str, Any], env: dict[str, str], loc: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="fleet.toml", env=env)
    assert any(p_loc == loc and reason in p_reason
               for p_loc, p_reason in info.value.problems), info.value.problems
    assert "hunter2" not in str(info.value)


def test_check_warns_without_a_compaction_key(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(f'[redis]\nurl = "{URL}"\n[store]\nkind = "redis"\n')
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "redis: url set, key_prefix 'fleetlb:', timeout 0.25s; store: redis; " \
        "limits: per instance" in out
    assert "warning: [redis] is set but [responses] compaction_key is not" in err
    assert "hunter2" not in out + err
    path.write_text(f'[redis]\nurl = "{URL}"\n[responses]\ncompaction_key = "{"k" * 32}"\n')
    assert main(["check", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_redis_changes_need_a_restart() -> None:
    running = parse_config({"redis": {"url": URL}})
    new = parse_config({"redis": {"url": URL.replace("10.0.0.5", "10.0.0.6")}})
    change = diff_configs(running, new)
    assert change.restart_required == ("redis",) and "hunter2" not in repr(change)
    assert keep_restart_only(new, running).redis == running.redis
    assert diff_configs(parse_config({}), new).restart_required == ("redis",)
    assert keep_restart_only(parse_config({}), running).redis == running.redis


def test_sharing_limits_needs_a_restart() -> None:
    running = parse_config({"redis": {"url": URL}})
    new = parse_config({"redis": {"url": URL}, "limits": {"shared": True}})
    assert diff_configs(running, new).restart_required == ("limits.shared",)
    assert keep_restart_only(new, running).limits.shared is False


def test_the_readme_shows_the_shipped_systemd_drop_in() -> None:
    root = Path(__file__).resolve().parents[2]
    drop_in = (root / "deploy/systemd/redis.conf").read_text()
    assert f"```ini\n{drop_in}```" in (root / "README.md").read_text()
    # a dead Redis must never stop the gateway
    assert not [ln for ln in drop_in.splitlines() if ln.startswith(("Requires=", "BindsTo="))]
