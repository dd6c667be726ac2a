"""The key table (pure): a presented key is found by its SHA-256 digest in one dict lookup, so the
time taken says nothing about how close a wrong key came; secrets are not kept, only digests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from lb.config import DEFAULT_KEY_NAME, Config, KeyConfig, Priority
from lb.errors import Unauthorized
from lb.model_names import model_key

MAX_CACHED_MODELS = 1024  # model-access answers kept per key; clients choose the names


@dataclass(frozen=True, slots=True)
class KeyLimits:
    rpm: int | None = None
    tpm: int | None = None
    max_in_flight: int | None = None

    is_unlimited: bool = field(init=False, compare=False)  # read on every call: computed once

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_unlimited", self.rpm is None and self.tpm is None
                           and self.max_in_flight is None)


@dataclass(slots=True, eq=False)
class Team:
    """One named key entry as the request path sees it (never its secret)."""

    name: str
    limits: KeyLimits = KeyLimits()
    priority: Priority = "interactive"
    models: tuple[str, ...] | None = None  # glob patterns; None: every model
    _allowed: dict[str, bool] = field(default_factory=dict, repr=False)

    def allows(self, model: str) -> bool:
        """Whether this key may use `model` (`qwen` and `qwen:latest` are one model)."""
        patterns = self.models
        if patterns is None:
            return True
        known = self._allowed.get(model)
        if known is None:
            key = model_key(model)
            known = any(fnmatchcase(model, p) or fnmatchcase(key, p) for p in patterns)
            if len(self._allowed) < MAX_CACHED_MODELS:
                self._allowed[model] = known
        return known

    @classmethod
    def from_config(cls, entry: KeyConfig) -> Team:
        return cls(entry.name, KeyLimits(entry.rpm, entry.tpm, entry.max_in_flight),
                   entry.priority, entry.models)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class KeyTable:
    """Every client key of one config generation: digest -> team."""

    __slots__ = ("_by_digest", "_open", "teams")

    def __init__(self, teams: tuple[Team, ...], by_digest: dict[bytes, Team],
                 open_team: Team | None) -> None:
        self.teams = teams  # in config order, the default entry first when there is one
        self._by_digest = by_digest
        self._open = open_team  # an open gateway (no keys at all): everyone is this team

    @property
    def is_open(self) -> bool:
        return self._open is not None

    def identify(self, authorization: str | None) -> Team:
        """The team of `Authorization: Bearer <key>`, or Unauthorized."""
        if self._open is not None:
            return self._open
        if not authorization:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'")
        if authorization.startswith("Bearer "):  # as every SDK spells it
            is_bearer, token = True, authorization[7:]
        else:
            scheme, _, token = authorization.partition(" ")
            is_bearer = scheme.lower() == "bearer"
        team = self._by_digest.get(hashlib.sha256(token.strip().encode()).digest())
        if team is None or not is_bearer:
            raise Unauthorized("Incorrect API key provided")
        return team

    def get(self, name: str) -> Team | None:
        return next((t for t in self.teams if t.name == name), None)

    @classmethod
    def from_config(cls, config: Config) -> KeyTable:
        """The table of a validated config (lb.config refuses a key held by two entries)."""
        entries = {k.name: k for k in config.keys}
        default_entry = entries.pop(DEFAULT_KEY_NAME, None)
        default = Team.from_config(default_entry or KeyConfig(name=DEFAULT_KEY_NAME))
        teams = [default] if (default_entry is not None or config.server.api_keys is not None
                              or not config.has_client_keys) else []
        by_digest = {digest(s.get_secret_value()): default for s in config.server.api_keys or ()}
        for entry in (default_entry, *entries.values()):
            if entry is None:
                continue
            team = default if entry is default_entry else Team.from_config(entry)
            if team is not default:
                teams.append(team)
            found = entry_digest(entry)
            if found is not None:
                by_digest[found] = team
        return cls(tuple(teams), by_digest, None if config.has_client_keys else default)


def entry_digest(entry: KeyConfig) -> bytes | None:
    """The SHA-256 of an entry's key (`key_sha256` is that digest already)."""
    if entry.key is not None:
        return digest(entry.key.get_secret_value())
    if entry.key_sha256 is not None:
        return bytes.fromhex(entry.key_sha256)
    return None
