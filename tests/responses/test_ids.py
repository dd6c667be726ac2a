import os
import random

import pytest

from lb.responses.ids import POOL_BYTES, IdMaker, PooledSystemRandom


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


def test_pooled_system_random_reads_the_kernel_a_pool_at_a_time() -> None:
    rng = PooledSystemRandom()
    maker = IdMaker(rng)
    ids = {maker.response() for _ in range(5 * POOL_BYTES // 24)}  # several refills
    assert len(ids) == 5 * POOL_BYTES // 24
    for k in (1, 7, 8, 9, 192, 8 * POOL_BYTES + 3):  # a request bigger than the pool too
        assert 0 <= rng.getrandbits(k) < 1 << k
    assert {rng.getrandbits(1) for _ in range(200)} == {0, 1}
    assert 0.0 <= rng.random() < 1.0
    with pytest.raises(NotImplementedError):
        rng.getstate()
    # a forked child must not repeat the ids its parent makes next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, maker.response().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    childs = os.read(read, 100).decode()
    os.close(read)
    assert childs != maker.response()
