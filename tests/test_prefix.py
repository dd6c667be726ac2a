"""The routing text, block hashes and the bounded prefix map: pure, table-driven."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

import pytest

from lb.prefix import ENTRY_BYTES, PrefixMap, block_hashes, routing_text

SYSTEM = "You are a careful assistant. " * 40


@pytest.mark.parametrize(("body", "history", "expected"), [
    ({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]}, (),
     "system\x1eS\x1euser\x1ehi"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                {"type": "image_url", "image_url": {}}]}]}, (),
     "user\x1ea"),
    ({"messages": [{"role": "assistant", "content": None, "reasoning_content": "think",
                    "tool_calls": [{"id": "c1", "type": "function",
                                    "function": {"name": "ls", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "files"}]}, (),
     "assistant\x1ethink\x1els\x1e{}\x1etool\x1efiles"),
    ({"instructions": "be brief", "input": "hello"}, (), "be brief\x1ehello"),
    ({"instructions": "I", "input": [{"type": "function_call_output", "call_id": "c",
                                      "output": "42"}]},
     ({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]},
      {"type": "reasoning", "summary": [{"type": "summary_text", "text": "r"}]},
      {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"}),
     "I\x1euser\x1eq\x1er\x1ef\x1e{}\x1e42"),
    ({"prompt": "once upon"}, (), "once upon"),
    ({"prompt": ["a", "b"]}, (), "a\x1eb"),
    ({"system": "sys", "prompt": "p"}, (), "sys\x1ep"),  # Ollama /api/generate
    ({"tools": [{"type": "function", "function": {"name": "x"}}], "messages": []}, (), ""),
    ({"messages": "not a list", "input": 3}, (), "not a list"),
    ({}, (), ""),
])
def test_routing_text(body: dict[str, Any], history: tuple[Any, ...], expected: str) -> None:
    assert routing_text(body, history) == expected.encode()


def test_a_string_input_and_its_stored_form_read_the_same() -> None:
    """Turn 2 rebuilds turn 1's input from the store as a normalised message: same prefix."""
    first = routing_text({"instructions": "I", "input": [{"role": "user", "content": "q"}]})
    stored = ({"id": "msg_1", "type": "message", "role": "user",
               "content": [{"type": "input_text", "text": "q"}]},
              {"id": "msg_2", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "a", "annotations": []}]})
    second = routing_text({"instructions": "I", "input": "more"}, stored)
    assert second.startswith(first)


def test_routing_text_is_capped_and_survives_bad_unicode() -> None:
    body = {"messages": [{"role": "user", "content": "\ud800" + "x" * 10_000}] * 20}
    text = routing_text(body, limit=4096)
    assert len(text) == 4096


def test_block_hashes_chain_and_seed() -> None:
    text = SYSTEM.encode()
    hashes = block_hashes(text, "m", block_bytes=256)
    assert len(hashes) == -(-len(text) // 256)  # the partial last block counts
    longer = block_hashes(text + b" and more", "m", block_bytes=256)
    assert longer[:len(text) // 256] == hashes[:len(text) // 256]  # a growing text keeps its head
    assert block_hashes(text, "other-model", block_bytes=256)[0] != hashes[0]
    changed = block_hashes(b"X" + text[1:], "m", block_bytes=256)
    assert not set(changed) & set(hashes)  # chained: a change in block 0 changes every block
    assert len(block_hashes(text * 100, "m", block_bytes=256, max_blocks=10)) == 10
    assert block_hashes(b"", "m") == []


def test_map_matches_the_leading_blocks_each_endpoint_holds() -> None:
    shared = block_hashes(SYSTEM.encode(), "m", block_bytes=64)
    conv_a = block_hashes((SYSTEM + "conversation a " * 20).encode(), "m", block_bytes=64)
    prefix_map = PrefixMap(10_000)
    prefix_map.insert(shared, "e1")
    prefix_map.insert(conv_a, "e2")
    matched = prefix_map.match(conv_a)
    assert matched == {"e1": len(SYSTEM) // 64, "e2": len(conv_a)}
    assert prefix_map.match(block_hashes(b"unrelated text" * 50, "m", block_bytes=64)) == {}


def test_map_evicts_tails_first_and_stays_bounded() -> None:
    prefix_map = PrefixMap(max_entries=20)
    old = block_hashes(b"o" * 64 * 15, "m", block_bytes=64)
    prefix_map.insert(old, "e1")
    prefix_map.insert(block_hashes(b"n" * 64 * 10, "m", block_bytes=64), "e2")
    assert len(prefix_map) == 20
    assert prefix_map.match(old) == {"e1": 10}  # the old chain lost its last 5 blocks, not its head


def test_entry_bytes_estimate_holds() -> None:
    rng = random.Random(1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        prefix_map = PrefixMap(1 << 30)
        for i in range(1000):
            hashes = [rng.getrandbits(63) for _ in range(20)]
            prefix_map.insert(hashes, "gpu-a")
            if i % 2:
                prefix_map.insert(hashes, "gpu-b")
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used / len(prefix_map) <= ENTRY_BYTES * 1.25
    assert PrefixMap.for_memory(4 << 20).max_entries == (4 << 20) // ENTRY_BYTES
