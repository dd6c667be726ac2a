"""Model -> pool -> attempt plan, over a fleet whose state the tests set directly."""

from __future__ import annotations

import random
from typing import Any

import pytest

from lb.config import parse_config
from lb.endpoints import Fleet, HealthState
from lb.errors import ConfigError, ModelNotFound, NoUsableEndpoint
from lb.routing import ANY_KIND, Router, Surface, Verdict


def router(endpoints: list[dict[str, Any]], models: list[dict[str, Any]] | None = None) -> Router:
    config = parse_config({"endpoints": [{"url": "http://127.0.0.1:1", **e} for e in endpoints],
                           "models": models or []}, env={})
    return Router(config, Fleet.from_configs(config.endpoints), random.Random(0))


def test_pool_from_served_models_and_aliases() -> None:
    r = router([{"name": "a", "models": ["llama3.1:8b"]}, {"name": "b", "models": ["llama3.1:8b",
                                                                                  "qwen"]}],
               [{"name": "llama3", "upstream": "llama3.1:8b", "endpoints": ["b"]}])
    assert [e.name for e in r.pool("llama3.1:8b").members] == ["a", "b"]
    alias = r.pool("llama3")
    assert (alias.upstream, [e.name for e in alias.members]) == ("llama3.1:8b", ["b"])
    assert alias.rewrites_model and not r.pool("qwen").rewrites_model
    assert r.model_names() == ["llama3", "llama3.1:8b", "qwen"]


def test_unknown_model_and_unserved_policy() -> None:
    r = router([{"name": "a", "models": ["m"]}], [{"name": "ghost", "upstream": "nothing"}])
    with pytest.raises(ModelNotFound) as info:
        r.pool("nope")
    assert info.value.code == "model_not_found" and info.value.status == 404
    with pytest.raises(NoUsableEndpoint):
        r.pool("ghost")
    assert r.model_names() == ["m"]


def test_discovered_models_show_up_after_generation_bump() -> None:
    r = router([{"name": "a", "models": ["m"]}])
    with pytest.raises(ModelNotFound):
        r.pool("new")
    ep = r.fleet.get("a")
    assert ep is not None and ep.set_discovered_models(["new"])
    r.fleet.models_changed()
    assert [e.name for e in r.pool("new").members] == ["a"]
    assert ep.serves("m")  # config models stay as a floor


def test_plan_never_repeats_and_exhausts() -> None:
    r = router([{"name": n, "models": ["m"]} for n in "abc"])
    plan = r.plan("m")
    seen = [plan.next() for _ in range(3)]
    assert sorted(e.name for e in seen if not isinstance(e, Verdict)) == ["a", "b", "c"]
    assert plan.next() is Verdict.EXHAUSTED


@pytest.mark.parametrize(("states", "in_flight", "expected", "panicked"), [
    (("healthy", "unknown"), (0, 0), {"a", "b"}, False),
    (("unhealthy", "healthy"), (0, 0), {"b"}, False),
    (("ejected", "healthy"), (0, 0), {"b"}, False),
    (("healthy", "healthy"), (1, 0), {"b"}, False),  # a is at max_in_flight
    (("healthy", "healthy"), (1, 1), Verdict.BUSY, False),
    (("unhealthy", "ejected"), (0, 0), {"a", "b"}, True),  # fail open
])
def test_plan_usability(states: tuple[str, str], in_flight: tuple[int, int],
                        expected: Any, panicked: bool) -> None:
    r = router([{"name": n, "models": ["m"], "max_in_flight": 1} for n in "ab"])
    for name, state, load in zip("ab", states, in_flight, strict=True):
        ep = r.fleet.get(name)
        assert ep is not None
        ep.state, ep.in_flight = HealthState(state), load
    plan = r.plan("m")
    first = plan.next()
    if isinstance(expected, Verdict):
        assert first is expected
    else:
        picks = {first.name} | {p.name for p in [plan.next()] if not isinstance(p, Verdict)}
        assert picks <= expected and first.name in expected
    assert plan.panicked is panicked


def test_draining_endpoints_never_chosen() -> None:
    r = router([{"name": n, "models": ["m"]} for n in "ab"])
    a = r.fleet.get("a")
    assert a is not None
    a.draining = True
    r.fleet.models_changed()
    assert [e.name for e in r.pool("m").members] == ["b"]


OLLAMA_ONLY = Surface("Ollama", kinds=frozenset({"ollama"}), is_warm_first=True)


def test_latest_tag_names_the_same_model() -> None:
    r = router([{"name": "a", "models": ["qwen:latest"]}, {"name": "b", "models": ["qwen"]},
                {"name": "c", "models": ["qwen:7b"]}])
    for asked in ("qwen", "qwen:latest"):
        assert [e.name for e in r.pool(asked).members] == ["a", "b"]
        assert r.pool(asked).upstream == asked  # Ollama accepts either spelling
    assert [e.name for e in r.pool("qwen:7b").members] == ["c"]
    assert r.model_names() == ["qwen:latest", "qwen:7b"]  # listed once, first spelling seen


def test_policy_matches_either_spelling() -> None:
    r = router([{"name": "a", "models": ["llama3.1:8b"]}],
               [{"name": "llama3:latest", "upstream": "llama3.1:8b"}])
    assert r.pool("llama3").upstream == "llama3.1:8b"
    with pytest.raises(ConfigError, match="duplicate model name"):
        parse_config({"models": [{"name": "x"}, {"name": "x:latest"}]}, env={})


def test_surface_keeps_only_its_kinds() -> None:
    r = router([{"name": "o", "kind": "ollama", "models": ["m"]},
                {"name": "v", "kind": "vllm", "models": ["m", "v-only"]}])
    assert [e.name for e in r.pool("m", OLLAMA_ONLY).members] == ["o"]
    assert [e.name for e in r.pool("m").members] == ["o", "v"]  # other surfaces: every kind
    with pytest.raises(ModelNotFound, match="not served by any Ollama endpoint"):
        r.pool("v-only", OLLAMA_ONLY)
    with pytest.raises(ModelNotFound, match="does not exist"):
        r.pool("nope", OLLAMA_ONLY)


def picks(r: Router, model: str, surface: Surface, n: int = 6) -> list[str]:
    chosen = []
    for _ in range(n):
        first = r.plan(model, surface=surface).next()
        assert not isinstance(first, Verdict)
        chosen.append(first.name)
    return chosen


@pytest.mark.parametrize("strategy", ["weighted", "least_in_flight", "least_loaded", "affinity"])
def test_warm_first_whatever_the_strategy(strategy: str) -> None:
    r = router([{"name": n, "kind": "ollama", "models": ["m"]} for n in "abc"],
               [{"name": "m", "strategy": strategy}])
    b = r.fleet.get("b")
    assert b is not None
    b.loaded_models = frozenset({"m:latest"})  # /api/ps lists the tagged name
    assert picks(r, "m", OLLAMA_ONLY) == ["b"] * 6
    assert len(set(picks(r, "m", ANY_KIND, 12))) > 1 or strategy in ("least_loaded", "affinity")


def test_warm_first_falls_back_to_cold_when_warm_is_unusable() -> None:
    r = router([{"name": n, "kind": "ollama", "models": ["m"], "max_in_flight": 1}
                for n in "ab"])
    a = r.fleet.get("a")
    assert a is not None
    a.loaded_models = frozenset({"m"})
    a.in_flight = 1  # the warm endpoint is full: a cold load beats waiting
    assert picks(r, "m", OLLAMA_ONLY) == ["b"] * 6
    a.in_flight = 0
    a.state = HealthState.UNHEALTHY
    assert picks(r, "m", OLLAMA_ONLY) == ["b"] * 6


def test_warm_first_keeps_priority_tiers() -> None:
    r = router([{"name": "primary", "kind": "ollama", "models": ["m"], "priority": 0},
                {"name": "primary2", "kind": "ollama", "models": ["m"], "priority": 0},
                {"name": "spare", "kind": "ollama", "models": ["m"], "priority": 1}],
               [{"name": "m", "strategy": "priority"}])
    spare, primary2 = r.fleet.get("spare"), r.fleet.get("primary2")
    assert spare is not None and primary2 is not None
    spare.loaded_models = frozenset({"m"})
    # a warm spare does not pull traffic off usable primaries, or they would stay cold for good
    assert set(picks(r, "m", OLLAMA_ONLY)) == {"primary", "primary2"}
    primary2.loaded_models = frozenset({"m"})
    assert picks(r, "m", OLLAMA_ONLY) == ["primary2"] * 6  # warm first inside the tier
