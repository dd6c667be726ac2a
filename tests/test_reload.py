"""Config reload: the pure diff and fleet carry-over, then the swap on a live in-process gateway."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp
import pytest
import structlog

from lb.appstate import METRICS, RUNTIME, UPSTREAM
from lb.config import Config, EndpointConfig, ProbesConfig, parse_config
from lb.endpoints import Fleet, HealthState
from lb.errors import ConfigError
from lb.lifecycle import reload
from lb.reload import ConfigChange, diff_configs, keep_restart_only, next_fleet
from lb.sdnotify import NoNotify
from probes.prober import Prober
from tests.conftest import GatewayFactory, SimFactory, endpoint


def config(**sections: Any) -> Config:
    sections.setdefault("endpoints", [{"name": "a", "url": "http://10.0.0.1:1", "models": ["m"]}])
    return parse_config(sections, env={})


EP_A = {"name": "a", "url": "http://10.0.0.1:1", "models": ["m"]}
EP_B = {"name": "b", "url": "http://10.0.0.2:1", "models": ["m", "n"]}


@pytest.mark.parametrize(("old", "new", "expected"), [
    ({}, {}, ConfigChange()),
    ({"endpoints": [EP_A]}, {"endpoints": [EP_A, EP_B]},
     ConfigChange(endpoints_added=("b",), models_added=("n",))),
    ({"endpoints": [EP_A, EP_B]}, {"endpoints": [EP_A]},
     ConfigChange(endpoints_removed=("b",), models_removed=("n",))),
    ({"endpoints": [EP_A]}, {"endpoints": [{**EP_A, "weight": 3, "api_key": "k"}]},
     ConfigChange(endpoints_changed=("a.weight", "a.api_key"))),
    ({"endpoints": [EP_A]}, {"endpoints": [{**EP_A, "url": "http://10.0.0.9:1"}]},
     ConfigChange(endpoints_replaced=("a",))),
    ({}, {"models": [{"name": "alias", "upstream": "m"}]}, ConfigChange(models_added=("alias",))),
    ({"models": [{"name": "alias", "upstream": "m"}]},
     {"models": [{"name": "alias", "upstream": "m", "strategy": "priority"}]},
     ConfigChange(models_changed=("alias.strategy",))),
    ({}, {"server": {"port": 9999, "api_keys": ["k"]}, "timeouts": {"idle": 5}},
     ConfigChange(settings_changed=("server.api_keys", "timeouts.idle"),
                  restart_required=("server.port",))),
    ({}, {"store": {"path": "/elsewhere.db"}, "ollama": {"allow_admin": True},
          "responses": {"normalize": False, "compaction_key": "k"}},
     ConfigChange(settings_changed=("responses.normalize", "ollama.allow_admin"),
                  restart_required=("store.path", "responses.compaction_key"))),
])
def test_diff(old: dict[str, Any], new: dict[str, Any], expected: ConfigChange) -> None:
    assert diff_configs(config(**old), config(**new)) == expected


def test_change_log_fields_name_keys_never_values() -> None:
    change = diff_configs(config(), config(server={"admin_key": "s3cret"}))
    assert change.log_fields() == {"settings_changed": ["server.admin_key"]}
    assert "s3cret" not in repr(change)
    assert ConfigChange().is_empty and not change.is_empty


def test_restart_only_settings_keep_their_running_value() -> None:
    running = config(server={"host": "127.0.0.1", "port": 8080})
    new = keep_restart_only(config(server={"host": "0.0.0.0", "port": 9, "max_queued": 7},
                                   store={"kind": "memory"},
                                   responses={"normalize": False, "compaction_key": "k"}),
                            running)
    assert (new.server.host, new.server.port, new.server.max_queued) == ("127.0.0.1", 8080, 7)
    assert new.store == running.store and new.responses.compaction_key is None
    assert new.responses.normalize is False  # read per request: it does change


def test_next_fleet_keeps_state_of_same_name_and_url() -> None:
    old = Fleet.from_configs(config(endpoints=[EP_A, EP_B]).endpoints)
    a, b = old.get("a"), old.get("b")
    assert a is not None and b is not None
    a.state, a.in_flight, a.supports_responses_api = HealthState.HEALTHY, 2, True
    a.set_discovered_models(["found"])
    new = next_fleet(old, config(endpoints=[{**EP_A, "weight": 5, "models": ["m2"]},
                                            {**EP_B, "url": "http://10.0.0.3:1"},
                                            {"name": "c", "url": "http://10.0.0.4:1"}]).endpoints)
    kept = new.get("a")
    assert kept is a  # the same object: health, in-flight and findings carried over
    assert (kept.state, kept.in_flight, kept.supports_responses_api) == (
        HealthState.HEALTHY, 2, True)
    assert kept.config.weight == 5 and kept.served_models == {"m2", "found"}
    replaced, added = new.get("b"), new.get("c")
    assert replaced is not None and replaced is not b and replaced.state is HealthState.UNKNOWN
    assert b.draining and not kept.draining  # the old b finishes its requests, gets no new ones
    assert added is not None and added.state is HealthState.UNKNOWN


def keyed(*endpoints: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"server": {"api_keys": ["sk-test"]}, "endpoints": list(endpoints), **extra}


async def stream_text(url: str, model: str = "m1", max_tokens: int = 20) -> tuple[str, bytes]:
    body = {"model": model, "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, s.post(
            url + "/v1/chat/completions", json=body,
            headers={"Authorization": "Bearer sk-test"}) as resp:
        assert resp.status == 200, await resp.text()
        return resp.headers["x-fleetlb-endpoint"], await resp.read()


async def test_reload_swaps_while_a_stream_finishes_on_a_removed_endpoint(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    slow = await start_sim("m1", tokens_per_s=100)
    other = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", slow)))
    old = gw.app[RUNTIME].current
    a = old.fleet.get("a")
    assert a is not None
    a.state = HealthState.HEALTHY
    streaming = asyncio.create_task(stream_text(gw.url, max_tokens=30))
    while a.in_flight == 0:
        await asyncio.sleep(0.01)
    new_config = keyed(endpoint("b", other), timeouts={"idle": 7})
    assert await reload(gw.app, lambda: parse_config(new_config, env={}), NoNotify())
    assert a.draining and a.in_flight == 1  # still streaming on the old generation
    assert [ep.name for ep in gw.fleet] == ["b"]
    assert gw.app[UPSTREAM].timeouts.idle == 7
    name, body = await streaming
    assert name == "a" and body.endswith(b"data: [DONE]\n\n") and b'"error"' not in body
    assert a.in_flight == 0
    name, _ = await stream_text(gw.url, max_tokens=2)
    assert name == "b"


async def test_reload_keeps_endpoint_objects_and_queue(start_sim: SimFactory,
                                                       start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim)))
    before = gw.app[RUNTIME].current
    ep = before.fleet.get("a")
    assert ep is not None
    ep.state = HealthState.HEALTHY
    new = keyed(endpoint("a", sim, weight=4, max_in_flight=2), endpoint("b", sim))
    assert await reload(gw.app, lambda: parse_config(new, env={}), NoNotify())
    after = gw.app[RUNTIME].current
    assert after is not before and after.fleet.get("a") is ep
    assert ep.state is HealthState.HEALTHY and ep.config.max_in_flight == 2
    assert after.admission is before.admission
    assert gw.app[METRICS].exposition().count(b'fleetlb_config_reloads_total{result="ok"} 1.0') == 1


async def test_invalid_config_keeps_the_old_one(start_sim: SimFactory,
                                                start_gateway: GatewayFactory,
                                                log_lines: Any) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim)))
    before = gw.app[RUNTIME].current

    def broken() -> Config:
        raise ConfigError("fleet.toml", [("endpoints[0].weight", "must be > 0")])

    assert not await reload(gw.app, broken, NoNotify())
    assert gw.app[RUNTIME].current is before
    assert b'fleetlb_config_reloads_total{result="error"} 1.0' in gw.app[METRICS].exposition()
    errors = [line for line in log_lines() if line["event"] == "config_reload_failed"]
    assert len(errors) == 1
    assert errors[0]["problems"] == ["endpoints[0].weight: must be > 0"]
    assert errors[0]["level"] == "error"
    name, _ = await stream_text(gw.url, max_tokens=2)
    assert name == "a"


async def test_probe_history_survives_a_settings_change(start_sim: SimFactory) -> None:
    sim = await start_sim("m1")
    fleet = Fleet.from_configs(config(endpoints=[{"name": "a", "url": sim.url}]).endpoints)
    ep = fleet.get("a")
    assert ep is not None
    async with aiohttp.ClientSession() as session:
        prober = Prober(lambda: fleet, ProbesConfig(), session, clock=time.monotonic,
                        rng=random.Random(0), log=structlog.get_logger("test"))
        await prober.probe_once(ep)
        ep.reconfigure(EndpointConfig(name="a", url=sim.url, weight=5, max_in_flight=3))
        await prober.probe_once(ep)
        assert prober.snapshot("a")["consecutive_successes"] == 2  # not started over
        ep.reconfigure(EndpointConfig(name="a", url=sim.url, kind="vllm"))  # other probes
        await prober.probe_once(ep)
        assert prober.snapshot("a")["consecutive_successes"] == 1  # a fresh record


async def test_a_crash_while_reloading_keeps_serving(start_sim: SimFactory,
                                                     start_gateway: GatewayFactory,
                                                     log_lines: Any) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim)))
    before = gw.app[RUNTIME].current

    def buggy() -> Config:
        raise RuntimeError("a bug, not a bad file")

    assert not await reload(gw.app, buggy, NoNotify())
    assert gw.app[RUNTIME].current is before
    assert [line["event"] for line in log_lines() if line["level"] == "error"] == [
        "config_reload_crashed"]
    name, _ = await stream_text(gw.url, max_tokens=2)
    assert name == "a"


async def test_restart_required_is_logged_and_the_old_values_stay(
        start_sim: SimFactory, start_gateway: GatewayFactory, log_lines: Any) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim)))
    running = gw.app[RUNTIME].current.config
    new = {**keyed(endpoint("a", sim)), "server": {"api_keys": ["sk-test"], "port": 1}}
    assert await reload(gw.app, lambda: parse_config(new, env={}), NoNotify())
    assert gw.app[RUNTIME].current.config.server.port == running.server.port
    [line] = [x for x in log_lines() if x["event"] == "config_reloaded"]
    assert "server.port" in line["restart_required"] and "restart required" in line["message"]
