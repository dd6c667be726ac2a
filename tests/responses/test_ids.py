import random

import pytest

from lb.responses.ids import IdMaker


@pytest.mark.parametrize(
    ("method", "prefix"),
    [
        ("response", "resp_"),
        ("message", "msg_"),
        ("function_call", "fc_"),
        ("reasoning", "rs_"),
        ("compaction", "cmp_"),
        ("call", "call_"),
    ],
)
def test_each_id_has_its_prefix_and_48_hex_digits(method: str, prefix: str) -> None:
    made = getattr(IdMaker(random.Random(7)), method)()
    assert made.startswith(prefix)
    tail = made.removeprefix(prefix)
    assert len(tail) == 48
    assert int(tail, 16) >= 0


def test_the_same_seed_makes_the_same_ids_and_ids_do_not_repeat() -> None:
    first = [IdMaker(random.Random(1)).message() for _ in range(2)]
    assert first[0] == first[1]
    maker = IdMaker(random.Random(1))
    assert len({maker.response() for _ in range(1000)}) == 1000


def test_system_random_is_accepted() -> None:
    assert IdMaker(random.SystemRandom()).response().startswith("resp_")
