"""Model name equivalence: Ollama's default tag means `qwen` and `qwen:latest` are one model.

The one place that knows it; routing, endpoint state, config validation and the Ollama
aggregations compare names through `model_key`.
"""

from __future__ import annotations

OLLAMA_DEFAULT_TAG = ":latest"  # Ollama lists `qwen2:latest` but clients ask for `qwen2`


def model_key(name: str) -> str:
    """The name two spellings of one model share: without a trailing `:latest`."""
    if name.endswith(OLLAMA_DEFAULT_TAG) and len(name) > len(OLLAMA_DEFAULT_TAG):
        return name[: -len(OLLAMA_DEFAULT_TAG)]
    return name
