"""Merging several Ollama endpoints' /api/tags, /api/ps and /api/version answers (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from lb.ollama.aggregate import (
    backend_versions,
    merge_ps,
    merge_tags,
    oldest_version,
    version_key,
)


def entry(name: str, digest: str = "d1", size: int = 10, **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": name, "digest": digest, "size": size, **extra}


def test_tags_union_deduplicated_as_first_reported() -> None:
    answers = [
        ("a", {"models": [entry("qwen:latest"), entry("llama3.1:8b", "d2", 20)]}),
        ("b", {"models": [entry("qwen", "other", 99), entry("phi3:latest", "d3", 30)]}),
        ("c", {"models": [entry("llama3.1:8b", "d2", 20), entry("llama3.1:8b", "d2", 20)]}),
    ]
    merged = merge_tags(answers)
    assert [m["name"] for m in merged] == ["qwen:latest", "llama3.1:8b", "phi3:latest"]
    qwen = merged[0]
    assert (qwen["digest"], qwen["size"]) == ("d1", 10)  # as the first endpoint reported it
    assert qwen["fleetlb"] == {"endpoints": ["a", "b"]}
    assert merged[1]["fleetlb"] == {"endpoints": ["a", "c"]}


@pytest.mark.parametrize("doc", [None, [], {"models": None}, {"models": [1, "x", {}]},
                                 {"models": [{"name": 3}]}, {"error": "boom"}])
def test_malformed_answers_are_skipped(doc: Any) -> None:
    assert merge_tags([("a", doc), ("b", {"models": [entry("m")]})]) == [
        {**entry("m"), "fleetlb": {"endpoints": ["b"]}}]
    assert merge_ps([("a", doc)]) == []


def test_ps_keeps_every_copy_with_its_endpoint() -> None:
    answers = [("a", {"models": [entry("m:latest", size_vram=5)]}),
               ("b", {"models": [entry("m:latest", size_vram=5), entry("n")]})]
    merged = merge_ps(answers)
    assert [(m["name"], m["fleetlb"]["endpoint"]) for m in merged] == [
        ("m:latest", "a"), ("m:latest", "b"), ("n", "b")]
    assert merged[0]["size_vram"] == 5


def test_backend_versions_and_oldest() -> None:
    answers = [("a", {"version": "0.9.3"}), ("b", {"version": "0.10.0"}),
               ("c", {"version": "0.5.0-rc2"}), ("d", {"nope": 1}), ("e", "0.1.0")]
    versions = backend_versions(answers)
    assert versions == {"a": "0.9.3", "b": "0.10.0", "c": "0.5.0-rc2"}
    assert oldest_version(versions) == "0.5.0-rc2"
    assert oldest_version({}) is None


@pytest.mark.parametrize(("older", "newer"), [
    ("0.9.3", "0.10.0"),  # numbers, not strings
    ("0.5.0-rc1", "0.5.0"),  # a pre-release comes before its release
    ("v0.1.9", "0.1.10"),
    ("dev", "0.0.1"),  # no numbers: oldest
])
def test_version_order(older: str, newer: str) -> None:
    assert version_key(older) < version_key(newer)
