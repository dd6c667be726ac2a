"""One generation of the gateway's working state, built from one Config.

Requests take `holder.current` once and finish on it, so a reload can swap in a new generation
atomically while old requests complete on the endpoints they started with. `RuntimeFactory` holds
what every generation shares and builds the next one from the previous (see lb/reload.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from lb.admission import Admission
from lb.auth import Auth, admin_auth
from lb.config import Config
from lb.endpoints import Fleet
from lb.forward import Forwarder, ForwardObserver
from lb.health import PassiveHealth
from lb.redact import Redactor, redactor_for
from lb.reload import next_fleet
from lb.routing import Router
from lb.teams.table import KeyTable
from lb.upstream import Upstream


@dataclass(slots=True, eq=False)
class Runtime:
    config: Config
    fleet: Fleet
    router: Router
    admission: Admission
    forwarder: Forwarder
    keys: KeyTable  # client keys: who is calling, their models and limits
    admin_auth: Auth
    redactor: Redactor  # removes this generation's secrets from quoted backend text


@dataclass(slots=True, eq=False)
class RuntimeHolder:
    current: Runtime


@dataclass(slots=True, eq=False)
class RuntimeFactory:
    """What every generation shares: the upstream client, randomness, clock and metrics hooks."""

    upstream: Upstream
    rng: random.Random
    clock: Callable[[], float]
    observer: ForwardObserver | None = None

    def build(self, config: Config, previous: Runtime | None = None) -> Runtime:
        """The first generation, or the next one after `previous` (its endpoints carried over)."""
        return build_runtime(config, self.upstream, self.rng, self.clock, self.observer, previous)


def build_runtime(config: Config, upstream: Upstream, rng: random.Random,
                  clock: Callable[[], float], observer: ForwardObserver | None = None,
                  previous: Runtime | None = None) -> Runtime:
    server = config.server
    if previous is None:
        fleet = Fleet.from_configs(config.endpoints)
        admission = Admission(fleet, max_queued=server.max_queued, timeout_s=server.queue_timeout,
                              promote_after_s=config.limits.promote_batch_after, clock=clock)
    else:
        fleet = next_fleet(previous.fleet, config.endpoints)
        admission = previous.admission  # one queue: waiters of both generations share slots
        admission.follow(fleet)
        admission.configure(max_queued=server.max_queued, timeout_s=server.queue_timeout)
        admission.promote_after_s = config.limits.promote_batch_after
    health = PassiveHealth.from_config(config.probes, clock)
    redactor = redactor_for(config)
    forwarder = Forwarder(fleet, upstream, admission, health,
                          max_attempts=config.retry.max_attempts, observer=observer,
                          redactor=redactor)
    admin_key = config.server.admin_key
    return Runtime(
        config=config,
        fleet=fleet,
        router=Router(config, fleet, rng),
        admission=admission,
        forwarder=forwarder,
        keys=KeyTable.from_config(config),
        admin_auth=admin_auth(admin_key.get_secret_value() if admin_key else None),
        redactor=redactor,
    )
