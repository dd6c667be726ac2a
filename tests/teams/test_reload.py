"""SIGHUP on a real fleetlb process: a keys_file edit changes a team's limits without resetting
its counters, adds a team, and no secret reaches the log; `fleetlb check` prints the keys table."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from lb.config import parse_config
from lb.describe import describe_config
from tests.conftest import SimFactory
from tests.fleetlb_process import ADMIN, FleetlbProcess, eventually

MSG = [{"role": "user", "content": "hi"}]
SECRET_A, SECRET_C, LEGACY = "sk-reload-a-secret", "sk-reload-c-secret", "sk-reload-legacy"


def keys_file(rpm: int, with_c: bool = False) -> str:
    text = f'[[keys]]\nname = "team-a"\nkey_env = "KEY_A"\nrpm = {rpm}\n'
    if with_c:
        text += f'\n[[keys]]\nname = "team-c"\nkey = "{SECRET_C}"\nmodels = ["m*"]\n'
    return text


@pytest.fixture
async def process(tmp_path: Path, start_sim: SimFactory) -> AsyncIterator[FleetlbProcess]:
    sim = await start_sim("m1")
    (tmp_path / "keys.toml").write_text(keys_file(rpm=3))
    config = (f'keys_file = "keys.toml"\n\n[server]\nadmin_key = "{ADMIN}"\n'
              f'api_keys = ["{LEGACY}"]\n\n[[endpoints]]\nname = "e"\nurl = "{sim.url}"\n'
              'models = ["m1"]\n')
    lb = await FleetlbProcess.start(tmp_path, config, env={"KEY_A": SECRET_A})
    yield lb
    lb.kill()


async def calls(url: str, key: str, n: int) -> list[int]:
    """The status of `n` chat calls, in order."""
    statuses = []
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        for _ in range(n):
            try:
                await client.chat.completions.create(model="m1", messages=MSG)
                statuses.append(200)
            except openai.APIStatusError as exc:
                statuses.append(exc.status_code)
    return statuses


async def test_sighup_changes_limits_and_keeps_counters(process: FleetlbProcess,
                                                        tmp_path: Path) -> None:
    lb = process
    assert await calls(lb.url, SECRET_A, 4) == [200, 200, 200, 429]
    assert await calls(lb.url, SECRET_C, 1) == [401]  # not a key yet
    (tmp_path / "keys.toml").write_text(keys_file(rpm=5, with_c=True))
    lb.send(signal.SIGHUP)

    async def reloaded() -> bool:
        return await lb.reloads("ok") == 1

    await eventually(reloaded, "the reload is applied")
    # the 3 calls already made still count: 2 more fit under the new limit, not 5
    assert await calls(lb.url, SECRET_A, 3) == [200, 200, 429]
    assert await calls(lb.url, SECRET_C, 1) == [200]
    rows = {row["name"]: row for row in (await lb.admin("/admin/keys"))["keys"]}
    assert rows["team-a"]["limits"]["rpm"] == 5
    assert rows["team-a"]["totals"]["requests"] == 5
    assert rows["team-a"]["totals"]["rate_limited"] == 2
    assert rows["team-a"]["window"]["requests"] == 5
    assert set(rows) == {"default", "team-a", "team-c"}
    change = lb.events("config_reloaded")[-1]
    assert change["keys_added"] == ["team-c"] and change["keys_changed"] == ["team-a.rpm"]
    lb.send(signal.SIGTERM)
    assert await lb.exit_code() == 0
    log = lb.log_path.read_text()
    assert [line["key"] for line in lb.events("access") if line["path"].startswith("/v1")][:4] \
        == ["team-a"] * 4
    for secret in (SECRET_A, SECRET_C, LEGACY, ADMIN):
        assert secret not in log


def test_check_prints_the_keys_table_without_secrets(tmp_path: Path) -> None:
    (tmp_path / "keys.toml").write_text(keys_file(rpm=600, with_c=True))
    config = parse_config({"keys_file": "keys.toml", "server": {"api_keys": [LEGACY]},
                           "keys": [{"name": "batch", "key_sha256": "ab" * 32,
                                     "priority": "batch", "tpm": 1000, "max_in_flight": 4}]},
                          env={"KEY_A": SECRET_A}, base=tmp_path)
    text = describe_config(config)
    table = text[text.index("keys: 4 named"):].splitlines()
    assert table[1].split() == ["name", "key", "models", "rpm", "tpm", "max_in_flight",
                                "priority"]
    assert table[2].split() == ["default", "1", "from", "[server]", "api_keys", "all", "-", "-",
                                "-", "interactive"]
    assert table[3].split() == ["batch", "sha256", "all", "-", "1000", "4", "batch"]
    assert table[4].split() == ["team-a", "$KEY_A", "all", "600", "-", "-", "interactive"]
    assert table[5].split() == ["team-c", "inline", "m*", "-", "-", "-", "interactive"]
    for secret in (SECRET_A, SECRET_C, LEGACY):
        assert secret not in text
