"""Merging what several Ollama endpoints answered into the one answer a client expects (pure).

Each answer is `(endpoint name, JSON document)`; malformed documents or entries are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from lb.model_names import model_key

Answer = tuple[str, Any]  # (endpoint name, its JSON document)
_NUMBERS = re.compile(r"\d+")


def merge_tags(answers: Iterable[Answer]) -> list[dict[str, Any]]:
    """/api/tags: each model once (`qwen` and `qwen:latest` are one), as the first endpoint to
    list it reported it (size, digest, details), with every endpoint that has it."""
    merged: dict[str, dict[str, Any]] = {}
    for endpoint, doc in answers:
        for entry in _entries(doc):
            key = model_key(model_name(entry))
            first = merged.get(key)
            if first is None:
                merged[key] = {**entry, "fleetlb": {"endpoints": [endpoint]}}
            elif endpoint not in first["fleetlb"]["endpoints"]:
                first["fleetlb"]["endpoints"].append(endpoint)
    return list(merged.values())


def merge_ps(answers: Iterable[Answer]) -> list[dict[str, Any]]:
    """/api/ps: every loaded model of every endpoint, each naming the endpoint it is loaded on."""
    return [{**entry, "fleetlb": {"endpoint": endpoint}}
            for endpoint, doc in answers for entry in _entries(doc)]


def backend_versions(answers: Iterable[Answer]) -> dict[str, str]:
    """/api/version answers: endpoint name -> the version it reported."""
    found = {}
    for endpoint, doc in answers:
        version = doc.get("version") if isinstance(doc, dict) else None
        if isinstance(version, str) and version:
            found[endpoint] = version
    return found


def oldest_version(versions: Mapping[str, str]) -> str | None:
    """The oldest version: what the whole fleet supports. None when there is none."""
    return min(versions.values(), key=version_key, default=None)


def version_key(version: str) -> tuple[tuple[int, ...], int]:
    """Order Ollama versions: numeric parts compared as numbers, a pre-release (`0.5.0-rc1`)
    before its release; a version without numbers sorts oldest."""
    release, dash, _ = version.removeprefix("v").partition("-")
    return tuple(int(n) for n in _NUMBERS.findall(release)), 0 if dash else 1


def _entries(doc: Any) -> list[dict[str, Any]]:
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list):
        return []
    return [e for e in models if isinstance(e, dict) and model_name(e)]


def model_name(entry: dict[str, Any]) -> str:
    name = entry.get("name") or entry.get("model")
    return name if isinstance(name, str) else ""
