"""The TOML config file as frozen pydantic models; `load_config` validates and resolves secrets.

Every problem is reported as `file: key.path: reason` through `ConfigError`; secrets are `SecretStr`
so they never print.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from lb.errors import ConfigError
from lb.model_names import model_key

EndpointKind = Literal["ollama", "vllm", "openai"]
StrategyName = Literal["weighted", "least_in_flight", "least_loaded", "priority", "affinity",
                       "cache_aware"]
ResponsesMode = Literal["auto", "native", "translate", "disabled"]
Priority = Literal["interactive", "batch"]
DEFAULT_KEY_NAME = "default"  # the entry `[server] api_keys` belong to (and an open gateway's)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    api_keys: tuple[SecretStr, ...] | None = None
    api_keys_file: Path | None = None
    admin_key: SecretStr | None = None
    admin_key_env: str | None = None
    max_body_bytes: int = Field(default=32 << 20, gt=0)
    drain_timeout: float = Field(default=30.0, ge=0)
    queue_timeout: float = Field(default=10.0, ge=0)  # longest wait for a free endpoint slot
    max_queued: int = Field(default=1024, ge=0)  # requests waiting at once; more get 429 at once

    def client_keys(self) -> frozenset[str]:
        return frozenset(k.get_secret_value() for k in self.api_keys or ())


class TimeoutsConfig(_Section):
    connect: float = Field(default=2.0, gt=0)
    first_byte: float = Field(default=60.0, gt=0)
    idle: float = Field(default=120.0, gt=0)
    total: float = Field(default=900.0, gt=0)
    # a client connection with no request under way (idle keep-alive, or a request head still
    # trickling in: slowloris) is closed after this; set when the server starts
    client_idle: float = Field(default=75.0, gt=0)


class RetryConfig(_Section):
    max_attempts: int = Field(default=3, ge=1)


class ProbesConfig(_Section):
    interval: float = Field(default=5.0, gt=0)
    timeout: float = Field(default=2.0, gt=0)
    rise: int = Field(default=2, ge=1)
    fall: int = Field(default=3, ge=1)
    eject_after: int = Field(default=5, ge=1)
    eject_for: float = Field(default=30.0, ge=0)


class StoreConfig(_Section):
    kind: Literal["sqlite", "memory", "redis"] = "sqlite"  # redis: shared by several instances
    path: Path | None = None  # default: $STATE_DIRECTORY/responses.db, else ./responses.db
    ttl: float = Field(default=30 * 24 * 3600.0, gt=0)  # seconds a stored response is kept

    def resolved_path(self, env: Mapping[str, str]) -> Path:
        if self.path is not None:
            return self.path
        state = env.get("STATE_DIRECTORY", "").split(":")[0]  # systemd may list several
        return Path(state or ".") / "responses.db"


class ResponsesConfig(_Section):
    normalize: bool = True  # native streams/bodies made to conform to the Open Responses spec
    compaction_key: SecretStr | None = None  # signs compaction items; also compaction_key_env
    compaction_key_env: str | None = None
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class RedisConfig(_Section):
    """The Redis that several fleetlb instances share (lb/shared): responses and limits."""

    url: SecretStr | None = None  # redis://, rediss:// (TLS) or unix://; may hold a password
    url_env: str | None = None
    key_prefix: str = "fleetlb:"  # several gateways may share one Redis
    timeout: float = Field(default=0.25, gt=0)  # seconds per Redis call on the request path


class OllamaConfig(_Section):
    """The Ollama-native API (`/api/*`)."""

    # /api/pull, /push, /create, /copy, /delete change every Ollama box of the fleet: off unless
    # the operator says so (then any client key may call them)
    allow_admin: bool = False
    fanout_timeout: float = Field(default=5.0, gt=0)  # per endpoint, for /api/tags, /ps, /version


class KeyConfig(_Section):
    """One `[[keys]]` entry: a named client key (a team) with its model access and limits."""

    name: str = Field(min_length=1)  # what logs, metrics and admin show; never the secret
    key: SecretStr | None = None
    key_env: str | None = None
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    models: tuple[str, ...] | None = None  # glob patterns; None: every model
    rpm: int | None = Field(default=None, ge=1)  # requests per minute; None: unlimited
    tpm: int | None = Field(default=None, ge=1)  # tokens (input + output) per minute
    max_in_flight: int | None = Field(default=None, ge=1)  # concurrent requests of this key
    priority: Priority = "interactive"

    @model_validator(mode="after")
    def _one_secret(self) -> KeyConfig:
        given = [f for f in ("key", "key_env", "key_sha256") if getattr(self, f) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of key, key_env, key_sha256 (not {' and '.join(given)})")
        # the default entry's members are [server] api_keys: it needs no key of its own
        if not given and self.name != DEFAULT_KEY_NAME:
            raise ValueError("give one of key, key_env, key_sha256")
        return self


class LimitsConfig(_Section):
    """How per-key limits behave (the limits themselves are on each `[[keys]]` entry)."""

    # a batch request that has waited this long for a slot is served like an interactive one,
    # so a steady interactive load never starves batch jobs
    promote_batch_after: float = Field(default=5.0, ge=0)
    # rpm, tpm and max_in_flight per key counted across every instance, in [redis] (lb/shared)
    shared: bool = False


class EndpointConfig(_Section):
    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://[^/\s]+")
    kind: EndpointKind = "openai"
    weight: float = Field(default=1, gt=0)
    priority: int = 0
    max_in_flight: int = Field(default=0, ge=0)
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    responses: ResponsesMode = "auto"
    models: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")


class CacheAwareConfig(_Section):
    """`[models.cache_aware]`: the knobs of `strategy = "cache_aware"` (README: How a request is
    routed). Loads are requests (in flight here ÷ weight, plus the backend's own queue)."""

    cache_threshold: float = Field(default=0.3, ge=0, le=1)  # least matched share of the prompt
    # a candidate is overloaded when its load exceeds the least loaded one's by more than
    # balance_abs AND by more than balance_rel times; None: half its max_in_flight (or of
    # DEFAULT_SLOTS when it has none), so a 4-slot box trips at 2 and a 64-slot vLLM at 32
    balance_abs: float | None = Field(default=None, ge=0)
    balance_rel: float = Field(default=1.5, ge=1)
    kv_overload: float = Field(default=0.9, gt=0, le=1)  # vLLM KV-cache use that counts as full
    block_bytes: int = Field(default=256, ge=16)  # ≈ 64 tokens
    max_blocks: int = Field(default=256, ge=1)  # hashed per request: caps the per-request cost
    max_map_bytes: int = Field(default=4 << 20, ge=1024)  # the pool's prefix map, estimated


class ModelConfig(_Section):
    name: str = Field(min_length=1)
    upstream: str | None = None
    strategy: StrategyName | None = None  # None: the API's default (lb/routing.py)
    endpoints: tuple[str, ...] | None = None
    cache_aware: CacheAwareConfig = CacheAwareConfig()

    @property
    def upstream_name(self) -> str:
        return self.upstream or self.name


class Config(_Section):
    server: ServerConfig = ServerConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    retry: RetryConfig = RetryConfig()
    probes: ProbesConfig = ProbesConfig()
    store: StoreConfig = StoreConfig()
    responses: ResponsesConfig = ResponsesConfig()
    ollama: OllamaConfig = OllamaConfig()
    limits: LimitsConfig = LimitsConfig()
    redis: RedisConfig | None = None
    endpoints: tuple[EndpointConfig, ...] = ()
    models: tuple[ModelConfig, ...] = ()
    keys: tuple[KeyConfig, ...] = ()
    keys_file: Path | None = None  # more [[keys]] tables, in a file a secret store may write

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        problems: list[tuple[str, str]] = []
        seen: set[str] = set()
        for i, ep in enumerate(self.endpoints):
            if ep.name in seen:
                problems.append((f"endpoints[{i}].name", f"duplicate endpoint name {ep.name!r}"))
            seen.add(ep.name)
        model_names: set[str] = set()
        for i, m in enumerate(self.models):
            if model_key(m.name) in model_names:  # `qwen` and `qwen:latest` are one model
                problems.append((f"models[{i}].name", f"duplicate model name {m.name!r}"))
            model_names.add(model_key(m.name))
            for j, ref in enumerate(m.endpoints or ()):
                if ref not in seen:
                    problems.append((f"models[{i}].endpoints[{j}]", f"no endpoint named {ref!r}"))
        if problems:
            raise ValueError("; ".join(f"{loc}: {reason}" for loc, reason in problems))
        return self

    @model_validator(mode="after")
    def _redis_references(self) -> Config:
        problems: list[tuple[str, str]] = []
        if self.redis is not None and self.redis.url is None and not self.redis.url_env:
            problems.append(("redis", "set url or url_env"))
        if self.store.kind == "redis" and self.redis is None:
            problems.append(("store.kind", "kind = \"redis\" needs a [redis] section"))
        if self.limits.shared and self.redis is None:
            problems.append(("limits.shared", "shared = true needs a [redis] section"))
        if problems:
            raise ValueError("; ".join(f"{loc}: {reason}" for loc, reason in problems))
        return self

    @property
    def has_client_keys(self) -> bool:
        """Whether clients must present a key (else the gateway is open)."""
        return self.server.api_keys is not None or any(
            k.key is not None or k.key_sha256 is not None for k in self.keys)

    def endpoint(self, name: str) -> EndpointConfig | None:
        return next((e for e in self.endpoints if e.name == name), None)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve (env vars, key files) one config file, or raise ConfigError."""
    source = str(path)
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read: {exc.strerror or exc}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [("", f"not valid TOML: {exc}")]) from exc
    base = Path(path).resolve().parent
    return parse_config(raw, source=source, env=os.environ if env is None else env, base=base)


def parse_config(raw: Mapping[str, Any], *, source: str = "<config>",
                 env: Mapping[str, str] | None = None, base: Path | None = None) -> Config:
    """Validate an already-parsed TOML document and resolve its secrets."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(e) for e in exc.errors()]) from None
    return _resolve_secrets(config, source, os.environ if env is None else env, base or Path.cwd())


_REASONS = {
    "greater_than": "must be > {gt:g}",
    "greater_than_equal": "must be >= {ge:g}",
    "less_than_equal": "must be <= {le:g}",
    "extra_forbidden": "unknown key",
    "missing": "required",
    "literal_error": "must be one of {expected}",
    "string_pattern_mismatch": "must be an http:// or https:// URL",
    "string_too_short": "must not be empty",
}


def _describe(error: Any) -> tuple[str, str]:
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    ctx = error.get("ctx") or {}
    kind = error["type"]
    reason = _REASONS[kind].format(**ctx) if kind in _REASONS else str(error["msg"])
    if loc.endswith("key_sha256"):
        reason = "must be the 64 hex digits of a SHA-256 digest"
    elif kind == "value_error" and loc:
        reason = reason.removeprefix("Value error, ")
    if kind == "value_error" and not loc:
        # our cross-reference validator already formats "loc: reason; loc: reason"
        msg = str(error["msg"]).removeprefix("Value error, ")
        first = msg.split("; ")[0]
        loc, _, reason = first.partition(": ")
        return loc, reason if len(msg.split("; ")) == 1 else f"{reason} (and more: {msg})"
    return loc, reason


def _resolve_secrets(config: Config, source: str, env: Mapping[str, str], base: Path) -> Config:
    problems: list[tuple[str, str]] = []

    def from_env(var: str | None, loc: str, current: SecretStr | None) -> SecretStr | None:
        if not var:
            return current
        if var not in env:
            problems.append((loc, f"environment variable {var} is not set"))
            return current
        return SecretStr(env[var])

    server = config.server
    keys = [*(server.api_keys or ()), *_read_key_file(server.api_keys_file, base, problems)]
    admin = from_env(server.admin_key_env, "server.admin_key_env", server.admin_key)
    responses = config.responses
    compaction = from_env(responses.compaction_key_env, "responses.compaction_key_env",
                          responses.compaction_key)
    redis = _resolve_redis(config.redis, from_env, problems)
    endpoints = tuple(
        ep.model_copy(update={"api_key": from_env(ep.api_key_env, f"endpoints[{i}].api_key_env",
                                                  ep.api_key)})
        for i, ep in enumerate(config.endpoints))
    client_keys = resolve_keys(config, keys, env, base, problems)
    if problems:
        raise ConfigError(source, problems)
    has_keys = server.api_keys is not None or server.api_keys_file is not None
    server = server.model_copy(update={"api_keys": tuple(keys) if has_keys else None,
                                       "admin_key": admin})
    return config.model_copy(update={
        "server": server, "endpoints": endpoints, "redis": redis, "keys": client_keys,
        "responses": responses.model_copy(update={"compaction_key": compaction})})


def _resolve_redis(redis: RedisConfig | None,
                   from_env: Callable[[str | None, str, SecretStr | None], SecretStr | None],
                   problems: list[tuple[str, str]]) -> RedisConfig | None:
    if redis is None:
        return None
    url = from_env(redis.url_env, "redis.url_env", redis.url)
    if url is not None and not url.get_secret_value().startswith(REDIS_SCHEMES):
        # never quote the URL: it may carry the password
        problems.append(("redis.url", "must be a redis://, rediss:// or unix:// URL"))
    return redis.model_copy(update={"url": url})


def _read_key_file(path: Path | None, base: Path,
                   problems: list[tuple[str, str]]) -> list[SecretStr]:
    if path is None:
        return []
    key_path = path if path.is_absolute() else base / path
    try:
        lines = key_path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        problems.append(("server.api_keys_file", f"cannot read {key_path}: {exc.strerror}"))
        return []
    return [SecretStr(s) for s in (ln.strip() for ln in lines) if s and not s.startswith("#")]


def resolve_keys(config: Config, api_keys: list[SecretStr], env: Mapping[str, str], base: Path,
                 problems: list[tuple[str, str]]) -> tuple[KeyConfig, ...]:
    """`[[keys]]` and the entries of `keys_file`, each `key_env` read into `key`; names unique."""
    entries = [(f"keys[{i}]", k) for i, k in enumerate(config.keys)]
    entries += [(f"keys_file: {loc}", k) for loc, k in _read_keys_file(config.keys_file, base,
                                                                        problems)]
    resolved: list[KeyConfig] = []
    names: set[str] = set()
    for loc, entry in entries:
        if entry.name in names:
            problems.append((f"{loc}.name", f"duplicate key name {entry.name!r}"))
        names.add(entry.name)
        if entry.key_env is not None:
            if entry.key_env not in env:
                problems.append((f"{loc}.key_env",
                                 f"environment variable {entry.key_env} is not set"))
                continue
            entry = entry.model_copy(update={"key": SecretStr(env[entry.key_env])})
        resolved.append(entry)
    _refuse_shared_secrets(api_keys, resolved, problems)
    return tuple(resolved)


def _refuse_shared_secrets(api_keys: list[SecretStr], entries: list[KeyConfig],
                           problems: list[tuple[str, str]]) -> None:
    """One key, one team: a key two entries hold would make its requests anyone's."""
    owners = {hashlib.sha256(k.get_secret_value().encode()).digest(): DEFAULT_KEY_NAME
              for k in api_keys}
    for entry in entries:
        if entry.key is not None:
            found = hashlib.sha256(entry.key.get_secret_value().encode()).digest()
        elif entry.key_sha256 is not None:
            found = bytes.fromhex(entry.key_sha256)
        else:
            continue
        owner = owners.setdefault(found, entry.name)
        if owner != entry.name:
            problems.append((f"keys.{entry.name}", f"the same key as {owner!r}"))


def _read_keys_file(path: Path | None, base: Path,
                    problems: list[tuple[str, str]]) -> list[tuple[str, KeyConfig]]:
    """The `[[keys]]` tables of `keys_file` (nothing else may be in it)."""
    if path is None:
        return []
    file = path if path.is_absolute() else base / path
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(("keys_file", f"cannot read {file}: {exc.strerror}"))
        return []
    except tomllib.TOMLDecodeError as exc:
        problems.append(("keys_file", f"{file} is not valid TOML: {exc}"))
        return []
    try:
        keys = _KeysFile.model_validate(raw).keys
    except ValidationError as exc:
        problems.extend((f"keys_file: {loc}", reason)
                        for loc, reason in (_describe(e) for e in exc.errors()))
        return []
    return [(f"keys[{i}]", k) for i, k in enumerate(keys)]


class _KeysFile(_Section):
    keys: tuple[KeyConfig, ...] = ()
