"""lb.nesting: one depth limit for all JSON fleetlb reads, so all it writes can be written."""

from __future__ import annotations

import orjson
import pytest

from lb.nesting import MAX_JSON_DEPTH, TooDeep, depth_exceeds, loads


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("doc", [nested(MAX_JSON_DEPTH), nested_objects(MAX_JSON_DEPTH),
                                 '{"s": "' + "[" * 5000 + '"}', "[" + "[1]," * 5000 + "[1]]"])
def test_at_the_limit_or_only_wide_is_read_and_writable(doc: str) -> None:
    value = loads(doc)
    assert orjson.loads(orjson.dumps(value)) == value
    assert loads(doc.encode()) == value


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 255, 1000])
def test_deeper_is_refused_as_bad_json(depth: int) -> None:
    for doc in (nested(depth), nested_objects(depth)):
        with pytest.raises(TooDeep) as info:
            loads(doc.encode())
        assert isinstance(info.value, orjson.JSONDecodeError)
        assert str(MAX_JSON_DEPTH) in str(info.value)


def test_scalars_and_invalid_json() -> None:
    assert loads(b"1") == 1
    assert loads(b'"x"') == "x"
    with pytest.raises(orjson.JSONDecodeError):
        loads(b"{")
    assert depth_exceeds({"a": [{"b": []}]}, 3)
    assert not depth_exceeds({"a": [{"b": []}]}, 4)
