"""lb.shared: the link and the Redis response store against a real redis-server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest
import structlog.testing
from pydantic import SecretStr

from lb.config import RedisConfig
from lb.errors import SharedStateDown, StoreUnavailable
from lb.responses.store import StoredResponse
from lb.shared.link import BACKOFF_FIRST_S, RedisLink
from lb.shared.store import RedisStore
from tests.redis_server import RedisServer

BOUND_S = 5.0  # "it ended": far above [redis] timeout, far below the test's own timeout
LinkFactory = Callable[..., RedisLink]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def make_link() -> AsyncIterator[LinkFactory]:
    links: list[RedisLink] = []

    def make(url: str, prefix: str = "fleetlb:", timeout: float = 0.25,
             clock: Callable[[], float] | None = None) -> RedisLink:
        config = RedisConfig(url=SecretStr(url), key_prefix=prefix, timeout=timeout)
        link = RedisLink(config, clock=clock) if clock else RedisLink(config)
        links.append(link)
        return link

    yield make
    for link in links:
        await link.close()


def record(rid: str, mode: str = "translate") -> StoredResponse:
    return StoredResponse(rid, "m1", mode, "gpu-a",  # type: ignore[arg-type]
                          [{"type": "message", "role": "user", "content": "hi"}],
                          {"id": rid, "output": [{"type": "message"}]} if mode == "translate"
                          else {})


async def test_two_links_share_what_is_stored(redis_server: RedisServer,
                                              make_link: LinkFactory) -> None:
    a = RedisStore(make_link(redis_server.url), ttl_s=60)
    b = RedisStore(make_link(redis_server.url), ttl_s=60)
    await a.put(record("resp_1"))
    await a.put(record("resp_2", "native"))
    assert await b.get("resp_1") == record("resp_1")
    native = await b.get("resp_2")
    assert native is not None and native.mode == "native" and native.endpoint == "gpu-a"
    assert await b.delete("resp_1") is True
    assert await a.get("resp_1") is None
    assert await a.delete("resp_1") is False
    assert await a.get("resp_unknown") is None


async def test_ttl_is_redis_expiry_and_prefixes_keep_gateways_apart(
        redis_server: RedisServer, make_link: LinkFactory) -> None:
    link = make_link(redis_server.url, prefix="gw1:")
    await RedisStore(link, ttl_s=90).put(record("resp_1"))
    ttl_ms = await link.client.pttl("gw1:response:resp_1")
    assert 0 < ttl_ms <= 90_000
    other = RedisStore(make_link(redis_server.url, prefix="gw2:"), ttl_s=90)
    assert await other.get("resp_1") is None


async def test_unix_socket_url(redis_server: RedisServer, make_link: LinkFactory) -> None:
    store = RedisStore(make_link(redis_server.unix_url), ttl_s=60)
    await store.put(record("resp_1"))
    assert await store.get("resp_1") == record("resp_1")


async def test_redis_gone_fails_closed_then_recovers(redis_server: RedisServer,
                                                     make_link: LinkFactory) -> None:
    clock = Clock()
    link = make_link(redis_server.url, clock=clock)
    store = RedisStore(link, ttl_s=60)
    await store.put(record("resp_1"))
    redis_server.kill()
    with pytest.raises(StoreUnavailable) as info:
        await store.get("resp_1")
    assert info.value.status == 503 and info.value.code == "store_unavailable"
    assert "Retry-After" in info.value.headers()
    assert not link.is_up
    # within the backoff nothing is sent at all: the answer is at once, and counted
    with pytest.raises(StoreUnavailable):
        await store.put(record("resp_2"))
    assert link.errors == {"store_get": 1, "store_put": 1}
    redis_server.start()
    clock.now += BACKOFF_FIRST_S
    assert await store.get("resp_1") is None  # a restarted Redis without persistence is empty
    assert link.is_up
    await store.put(record("resp_3"))
    assert await store.get("resp_3") == record("resp_3")


async def test_backoff_doubles_while_redis_stays_down(redis_server: RedisServer,
                                                      make_link: LinkFactory) -> None:
    clock = Clock()
    link = make_link(redis_server.url, clock=clock)
    redis_server.kill()
    waits = []
    for _ in range(8):
        with pytest.raises(SharedStateDown) as info:
            await link.run("ping", lambda r: r.ping())
        waits.append(info.value.retry_after_s)
        clock.now += info.value.retry_after_s
    assert waits[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert waits[-1] == pytest.approx(5.0)


async def test_a_redis_that_never_answers_costs_at_most_the_timeout(
        make_link: LinkFactory) -> None:
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        store = RedisStore(make_link(f"redis://127.0.0.1:{port}/0", timeout=0.2), ttl_s=60)
        async with asyncio.timeout(BOUND_S):
            with pytest.raises(StoreUnavailable):
                await store.get("resp_1")
            with pytest.raises(StoreUnavailable):
                await store.put(record("resp_1"))


async def test_a_refused_password_is_never_logged(make_link: LinkFactory) -> None:
    server = RedisServer(password="the-right-one")
    server.start()
    try:
        link = make_link(f"redis://:hunter2-secret@127.0.0.1:{server.port}/0")
        with structlog.testing.capture_logs() as logs, pytest.raises(SharedStateDown) as info:
            await link.run("ping", lambda r: r.ping())
        assert logs and logs[0]["event"] == "redis_unavailable", logs
        assert "hunter2" not in repr(logs) and "hunter2" not in str(info.value)
        good = make_link(f"redis://:the-right-one@127.0.0.1:{server.port}/0")
        assert await good.check()
    finally:
        server.stop()
