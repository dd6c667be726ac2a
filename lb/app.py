"""Composition root: builds the aiohttp Application from a Config and owns every lifespan."""

from __future__ import annotations

import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from lb.admin import handlers as admin_page
from lb.admin.ring import StatsRing
from lb.appstate import (
    ACCESS_LOG,
    DRAIN,
    KEY_GATE,
    METRICS,
    PROBES,
    REDIS,
    REQUEST_IDS,
    RESPONSES,
    RUNTIME,
    RUNTIME_FACTORY,
    UPSTREAM,
)
from lb.config import Config
from lb.drain import Drain
from lb.handlers import (
    OPENAI_PATHS,
    admin_endpoints,
    healthz,
    list_models,
    metrics,
    openai_proxy,
    readyz,
)
from lb.lifecycle import drain_on_shutdown
from lb.metrics import KeyCollector, Metrics
from lb.middleware import gateway_middleware
from lb.observe import AccessLog, RequestIds, access_log_for
from lb.ollama import handlers as ollama
from lb.responses.handlers import add_routes as add_responses_routes
from lb.responses.ids import IdMaker, PooledSystemRandom
from lb.responses.store import ResponseStore, open_store
from lb.responses.turn import ResponsesContext
from lb.runtime import RuntimeFactory, RuntimeHolder
from lb.shared.limits import SharedLimits
from lb.shared.link import RedisLink
from lb.shared.metrics import RedisCollector
from lb.shared.store import RedisStore
from lb.teams.admin import admin_keys
from lb.teams.gate import KeyGate
from lb.upstream import Upstream
from probes.prober import Prober

CleanupContext = Callable[[web.Application], AsyncIterator[None]]

NO_AIOHTTP_BODY_LIMIT = 1 << 40  # the handlers enforce [server] max_body_bytes themselves

log = structlog.get_logger("lb.app")


def build_app(config: Config, *, rng: random.Random | None = None,
              clock: Callable[[], float] = time.monotonic,
              active_probes: bool = True,
              access_log: AccessLog | None = None) -> web.Application:
    """The gateway; `active_probes=False` leaves endpoint health to the caller (tests)."""
    app = web.Application(middlewares=[gateway_middleware],
                          client_max_size=NO_AIOHTTP_BODY_LIMIT)
    app[ACCESS_LOG] = access_log or access_log_for("json")
    app[REQUEST_IDS] = RequestIds()
    upstream = Upstream(config.timeouts)
    app[UPSTREAM] = upstream
    # the metrics read whichever generation is current when asked
    ring = StatsRing(time.monotonic)  # the status page's history, fed by the metrics
    app[METRICS] = observer = Metrics(lambda: app[RUNTIME].current.fleet,
                                      lambda model: app[RUNTIME].current.router.knows(model),
                                      stats=ring)
    app[RUNTIME_FACTORY] = factory = RuntimeFactory(upstream, rng or random.Random(), clock,
                                                    observer)
    app[RUNTIME] = RuntimeHolder(factory.build(config))
    link = RedisLink(config.redis) if config.redis is not None else None  # connects when used
    if link is not None:
        app[REDIS] = link
    # outlives reloads: limits and totals kept by key name
    app[KEY_GATE] = KeyGate(clock, SharedLimits(link) if link and config.limits.shared else None)
    observer.registry.register(KeyCollector(lambda: app[KEY_GATE].stats,
                                            lambda: app[RUNTIME].current.admission
                                            .queued_by_priority()))
    app[DRAIN] = Drain()
    app.on_shutdown.append(drain_on_shutdown)
    app.on_cleanup.append(_flush_access_log)
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_shared_state)
    app.cleanup_ctx.append(_responses_store(rng or PooledSystemRandom()))
    if active_probes:
        app.cleanup_ctx.append(_prober(rng or random.Random(), clock))
    _add_routes(app)
    admin_page.add_routes(app, admin_page.AdminPage(ring))
    return app


async def _flush_access_log(app: web.Application) -> None:
    app[ACCESS_LOG].flush()


def _add_routes(app: web.Application) -> None:
    for prefix in ("/v1", "/openai/v1"):
        for path in OPENAI_PATHS:
            app.router.add_post(prefix + path, openai_proxy(path))
        app.router.add_get(prefix + "/models", list_models)
        add_responses_routes(app, prefix)
    ollama.add_routes(app.router)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/admin/endpoints", admin_endpoints)
    app.router.add_get("/admin/keys", admin_keys)
    app.router.add_get("/metrics", metrics)


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    upstream = app[UPSTREAM]
    await upstream.open_session()
    config = app[RUNTIME].current.config
    if not config.has_client_keys:
        log.warning("no_client_keys", message="no [server] api_keys nor [[keys]]: the gateway "
                    "is OPEN to anyone who can reach it")
    log.info("started", endpoints=len(config.endpoints), models=len(config.models))
    yield
    await upstream.close_session()


async def _shared_state(app: web.Application) -> AsyncIterator[None]:
    """The Redis link, when [redis] is set: shared by the response store and the limits."""
    link = app.get(REDIS)
    if link is None:
        yield
        return
    app[METRICS].registry.register(
        RedisCollector(link, lambda: app[RESPONSES].not_stored if RESPONSES in app else 0))
    if not await link.check():
        log.warning("redis_unreachable_at_start", message="serving without Redis until it "
                    "answers: limits pass unchecked, stored responses cannot be read")
    limits = app[KEY_GATE].limits
    if isinstance(limits, SharedLimits):
        await limits.start()
    yield
    if isinstance(limits, SharedLimits):
        await limits.stop()  # after the drain: queued ends sent, our leases returned
    await link.close()


async def _open_store(app: web.Application, config: Config) -> ResponseStore:
    if config.store.kind == "redis":
        return RedisStore(app[REDIS], config.store.ttl)
    return await open_store(config.store, os.environ)


def _responses_store(rng: random.Random) -> CleanupContext:
    """The response store lives as long as the app; the compaction key is read once."""

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        config = app[RUNTIME].current.config
        store = await _open_store(app, config)
        key = config.responses.compaction_key
        if key is None:
            log.warning("no_compaction_key", message="compaction items are signed with a key "
                        "made at start: they do not survive a restart or reach other instances")
        app[RESPONSES] = ResponsesContext(
            store=store, ids=IdMaker(rng), normalize=config.responses.normalize,
            compaction_key=key.get_secret_value().encode() if key else secrets.token_bytes(32),
            store_is_up=(lambda: store.is_up) if isinstance(store, RedisStore) else lambda: True)
        yield
        await store.close()

    return lifespan


def _prober(rng: random.Random, clock: Callable[[], float]) -> CleanupContext:
    """The background prober shares the upstream session and the passive-health clock."""

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        holder = app[RUNTIME]
        prober = Prober(lambda: holder.current.fleet, holder.current.config.probes,
                        app[UPSTREAM].session, clock=clock, rng=rng,
                        log=structlog.get_logger("probes"),
                        redact=lambda text: holder.current.redactor.text(text))
        app[PROBES] = prober
        await prober.start()
        yield
        await prober.stop()

    return lifespan
