"""The one redaction step: every piece of backend text fleetlb quotes (client errors, log lines,
/admin, metrics) passes `Redactor.text` first, which removes every configured secret and anything
shaped like a bearer token. Pure: no I/O, the secrets are handed in.

A backend may echo what it received (its `Authorization` header, the request), so its error text
can hold the endpoint's own key; a client key or the admin key may be pasted into a prompt that a
backend quotes back. Redaction happens before truncation, so a cut can never leave half a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from lb.config import Config

REDACTED = "[redacted]"
_MIN_TAIL = 3  # a shorter tail that begins a secret reveals too little to remove it
# `Bearer <token>`, `Basic <token>`, and key-value pairs that name a credential
_TOKEN_SHAPES = (
    r"(?i:\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]+)",
    r"(?i:\b(?:authorization|x-api-key|api[-_]?key|proxy-authorization)[\"']?\s*[:=]\s*[\"']?"
    r"[^\s\"',;}]+(?:\s+[^\s\"',;}]+)?)",
    r"\bsk-[A-Za-z0-9_-]{8,}",  # the OpenAI-style key shape, wherever it appears
)


class Redactor:
    """Removes the given secrets and bearer-shaped tokens from text; safe on any string."""

    __slots__ = ("_pattern", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so a secret that contains another is removed whole
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        parts = [re.escape(s) for s in self._secrets] + list(_TOKEN_SHAPES)
        self._pattern = re.compile("|".join(f"(?:{p})" for p in parts))

    def text(self, text: str, limit: int | None = None) -> str:
        """`text` without secrets, then cut to `limit` characters (when given).

        Text that was itself cut (a bounded read) may end in the first part of a secret, and so
        may the cut here: a tail that begins a secret is removed too."""
        clean = self._cut_tail(self._pattern.sub(REDACTED, text))
        if limit is None or len(clean) <= limit:
            return clean
        return self._cut_tail(clean[:limit])

    def _cut_tail(self, text: str) -> str:
        for secret in self._secrets:
            for size in range(min(len(secret) - 1, len(text)), _MIN_TAIL - 1, -1):
                if text.endswith(secret[:size]):
                    return text[:-size] + REDACTED
        return text

    def bytes(self, data: bytes) -> bytes:
        """`data` without secrets (as UTF-8, undecodable bytes kept as they were)."""
        text = data.decode("utf-8", "surrogateescape")
        clean = self.text(text)
        return data if clean == text else clean.encode("utf-8", "surrogateescape")

    def holds_secret(self, text: str) -> bool:
        return any(secret in text for secret in self._secrets)


NO_SECRETS = Redactor()


def secrets_of(config: Config) -> list[str]:
    """Every secret a config holds: client keys ([server] api_keys, [[keys]]), the admin key,
    endpoint keys, the compaction key, passwords in the Redis and endpoint URLs.

    A new kind of secret in the config joins this list, so that redaction cannot forget it."""
    server = config.server
    found = list(server.client_keys())
    # [[keys]] given by hash only cannot be listed: the bearer-token shapes still catch them
    found += [k.key.get_secret_value() for k in config.keys if k.key is not None]
    found += [k.key.get_secret_value() for k in config.keys if k.key is not None]
    if server.admin_key is not None:
        found.append(server.admin_key.get_secret_value())
    found += [ep.api_key.get_secret_value() for ep in config.endpoints if ep.api_key is not None]
    key = config.responses.compaction_key
    if key is not None:
        found.append(key.get_secret_value())
    if config.redis is not None and config.redis.url is not None:
        url = config.redis.url.get_secret_value()
        found += [url, *_password_of(url)]
    for ep in config.endpoints:
        found += _password_of(ep.url)
    return found


def _password_of(url: str) -> list[str]:
    """The password a URL carries in its userinfo (`scheme://user:password@host`), if any."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password] if password else []


def redactor_for(config: Config) -> Redactor:
    return Redactor(secrets_of(config))
