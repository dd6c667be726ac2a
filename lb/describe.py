"""Human-readable summary of a resolved config for `fleetlb check`; secrets only as set/unset."""

from __future__ import annotations

import random

from lb.config import Config
from lb.endpoints import Fleet
from lb.routing import EMBEDDINGS_STRATEGY, Router


def describe_config(config: Config) -> str:
    s, t = config.server, config.timeouts
    keys = "open (no api_keys)" if s.api_keys is None else f"{len(s.api_keys)} client key(s)"
    lines = [
        f"server: {s.host}:{s.port}, {keys}, admin key {'set' if s.admin_key else 'not set'}",
        f"timeouts: connect {t.connect:g}s, first_byte {t.first_byte:g}s"
        f", idle {t.idle:g}s, total {t.total:g}s; "
        f"retry: max_attempts {config.retry.max_attempts}",
        "endpoints:",
    ]
    for ep in config.endpoints:
        key = ", api key set" if ep.api_key else ""
        limit = ep.max_in_flight or "unlimited"
        lines.append(f"  {ep.name}: {ep.url} kind={ep.kind} weight={ep.weight:g} "
                     f"priority={ep.priority} max_in_flight={limit} responses={ep.responses}{key}")
    lines.append("pools:")
    router = Router(config, Fleet.from_configs(config.endpoints), random.Random(0))
    policies = {m.name: m for m in config.models}
    for name in router.model_names():
        pool = router.pool(name)
        policy = policies.get(name)
        strategy = (policy.strategy if policy and policy.strategy else
                    f"{router.strategy_name(name)}; embeddings {EMBEDDINGS_STRATEGY}")
        arrow = f" -> {pool.upstream}" if pool.rewrites_model else ""
        members = ", ".join(ep.name for ep in pool.members)
        lines.append(f"  {name}{arrow} [{strategy}]: {members}")
    unserved = [m.name for m in config.models if m.name not in router.model_names()]
    for name in unserved:
        lines.append(f"  {name}: no endpoint lists '{policies[name].upstream_name}' yet "
                     "(the prober may discover it)")
    lines.extend(_shared_state(config))
    return "\n".join(lines)


def _shared_state(config: Config) -> list[str]:
    redis = config.redis
    if redis is None:
        return []
    source = f"url from ${redis.url_env}" if redis.url_env else "url set"
    limits = "shared" if config.limits.shared else "per instance"
    return [f"redis: {source}, key_prefix {redis.key_prefix!r}, timeout {redis.timeout:g}s; "
            f"store: {config.store.kind}; limits: {limits}"]


def config_warnings(config: Config) -> list[str]:
    """What `fleetlb check` warns about: the config serves, but not as the operator may think."""
    warnings = []
    if config.redis is not None and config.responses.compaction_key is None:
        warnings.append("[redis] is set but [responses] compaction_key is not: each instance "
                        "signs compaction items with its own key made at start, so an item made "
                        "on one instance is refused by the others (and after a restart). Set the "
                        "same compaction_key on every instance.")
    return warnings
