"""What a config reload changes (pure): the diff of two configs and the next fleet generation.

Endpoints with the same name and URL are carried over as the same `Endpoint` object, so health,
probe findings, Responses support and in-flight counts survive while their settings are updated in
place. Removed endpoints are marked draining: requests of older generations finish on them, nothing
new is routed there, and they are gone once the last generation that holds them is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from pydantic import BaseModel

from lb.config import Config, EndpointConfig, StoreConfig
from lb.endpoints import Endpoint, Fleet

# settings read once at start: the listening socket, the response store, and the key that signs the
# compaction items clients hold; a reload reports them as "restart required" and keeps them
RESTART_ONLY: dict[str, tuple[str, ...]] = {
    "server": ("host", "port"),
    "store": tuple(StoreConfig.model_fields),
    "responses": ("compaction_key", "compaction_key_env"),
    "limits": ("shared",),  # where limit state lives (in process or Redis) is chosen at start
}
# optional sections read once at start as a whole (the Redis link, shared by store and limits)
RESTART_ONLY_SECTIONS = ("redis",)
_LISTS = ("endpoints", "models", "keys")  # Config fields diffed item by item, not as sections


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """Names only (never values: some are secrets), for the one log line a reload gets."""

    endpoints_added: tuple[str, ...] = ()
    endpoints_removed: tuple[str, ...] = ()
    endpoints_replaced: tuple[str, ...] = ()  # same name, new URL: a new endpoint, probed anew
    endpoints_changed: tuple[str, ...] = ()  # "gpu-a.weight"
    models_added: tuple[str, ...] = ()
    models_removed: tuple[str, ...] = ()
    models_changed: tuple[str, ...] = ()  # "[[models]] llama3.strategy"
    keys_added: tuple[str, ...] = ()  # [[keys]] names (never their secrets)
    keys_removed: tuple[str, ...] = ()
    keys_changed: tuple[str, ...] = ()  # "team-a.rpm", "team-a.key"
    settings_changed: tuple[str, ...] = ()  # "timeouts.idle", "server.api_keys"
    restart_required: tuple[str, ...] = ()  # "server.port": changed in the file, old value kept

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def log_fields(self) -> dict[str, Any]:
        """The non-empty parts, as lists, for structlog."""
        return {f.name: list(value) for f in fields(self) if (value := getattr(self, f.name))}


def diff_configs(old: Config, new: Config) -> ConfigChange:
    old_eps = {e.name: e for e in old.endpoints}
    new_eps = {e.name: e for e in new.endpoints}
    both = [n for n in new_eps if n in old_eps]
    old_models, new_models = _model_names(old), _model_names(new)
    old_policies = {m.name: m for m in old.models}
    settings, restart = _settings_changed(old, new)
    old_keys = {k.name: k for k in old.keys}
    new_keys = {k.name: k for k in new.keys}
    return ConfigChange(
        endpoints_added=tuple(n for n in new_eps if n not in old_eps),
        endpoints_removed=tuple(n for n in old_eps if n not in new_eps),
        endpoints_replaced=tuple(n for n in both if new_eps[n].url != old_eps[n].url),
        endpoints_changed=tuple(f"{n}.{key}" for n in both if new_eps[n].url == old_eps[n].url
                                for key in _changed_keys(old_eps[n], new_eps[n])),
        models_added=tuple(sorted(new_models - old_models)),
        models_removed=tuple(sorted(old_models - new_models)),
        models_changed=tuple(f"{m.name}.{key}" for m in new.models if m.name in old_policies
                             for key in _changed_keys(old_policies[m.name], m)),
        keys_added=tuple(n for n in new_keys if n not in old_keys),
        keys_removed=tuple(n for n in old_keys if n not in new_keys),
        keys_changed=tuple(f"{n}.{key}" for n, k in new_keys.items() if n in old_keys
                           for key in _changed_keys(old_keys[n], k)),
        settings_changed=settings,
        restart_required=restart,
    )


def keep_restart_only(new: Config, running: Config) -> Config:
    """`new` with the running values of the settings that only a restart can change."""
    sections = {}
    for section, keys in RESTART_ONLY.items():
        kept = {key: getattr(getattr(running, section), key) for key in keys}
        sections[section] = getattr(new, section).model_copy(update=kept)
    for section in RESTART_ONLY_SECTIONS:
        sections[section] = getattr(running, section)
    return new.model_copy(update=sections)


def next_fleet(old: Fleet, configs: Iterable[EndpointConfig]) -> Fleet:
    """The fleet of the new generation, reusing `old`'s endpoints whose name and URL are unchanged.

    Endpoints of `old` that are not reused are marked draining.
    """
    endpoints: list[Endpoint] = []
    for config in configs:
        endpoint = old.get(config.name)
        if endpoint is not None and endpoint.config.url == config.url:
            endpoint.reconfigure(config)
        else:
            endpoint = Endpoint(config)
        endpoints.append(endpoint)
    reused = {id(e) for e in endpoints}
    for endpoint in old:
        if id(endpoint) not in reused:
            endpoint.draining = True
    return Fleet(endpoints)


def _model_names(config: Config) -> set[str]:
    """What clients may ask for according to the file (the prober may add more)."""
    return {m.name for m in config.models} | {m for e in config.endpoints for m in e.models}


def _changed_keys(old: BaseModel, new: BaseModel) -> list[str]:
    return [key for key in type(new).model_fields if getattr(old, key) != getattr(new, key)]


def _settings_changed(old: Config, new: Config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    settings: list[str] = []
    restart: list[str] = []
    for section in Config.model_fields:
        if section in _LISTS:
            continue
        if section in RESTART_ONLY_SECTIONS:
            if getattr(old, section) != getattr(new, section):
                restart.append(section)
            continue
        if not isinstance(getattr(new, section), BaseModel):  # a top-level value (keys_file)
            if getattr(old, section) != getattr(new, section):
                settings.append(section)
            continue
        for key in _changed_keys(getattr(old, section), getattr(new, section)):
            name = f"{section}.{key}"
            (restart if key in RESTART_ONLY.get(section, ()) else settings).append(name)
    return tuple(settings), tuple(restart)
