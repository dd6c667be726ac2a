"""Who may call /admin and /metrics: the admin key (client keys are lb.teams' table).

A gateway with no admin key leaves them open: `NoAuth` is the null object.
"""

from __future__ import annotations

import hmac
from typing import Protocol

from lb.errors import Unauthorized


class Auth(Protocol):
    def check(self, authorization: str | None) -> None: ...


class NoAuth:
    __slots__ = ()

    def check(self, authorization: str | None) -> None:
        return None


class BearerKeys:
    """Accepts `Authorization: Bearer <key>` for any configured key, compared in constant time."""

    __slots__ = ("_keys", "_what")

    def __init__(self, keys: frozenset[str], what: str = "API key") -> None:
        self._keys = tuple(k.encode() for k in keys)
        self._what = what

    def check(self, authorization: str | None) -> None:
        if not authorization:
            raise Unauthorized(f"Missing {self._what}: send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        presented = token.strip().encode()
        # compare against every key so the time taken does not reveal which one nearly matched
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        if scheme.lower() != "bearer" or not matched:
            raise Unauthorized(f"Incorrect {self._what} provided")


def admin_auth(key: str | None) -> Auth:
    return NoAuth() if key is None else BearerKeys(frozenset({key}), "admin key")
