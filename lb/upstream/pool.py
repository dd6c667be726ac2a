"""Keep-alive connections per endpoint, and requests as one prebuilt bytes buffer.

A request takes the most recently used idle connection (LIFO: the warmest socket, and the rest can
age out) or opens one; a connection that the backend closed while it sat idle is dropped when
found, and a request that a reused connection loses before any byte of an answer is sent once
more on a fresh one (the backend closed it as we wrote: it never saw the request).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import SecretStr

from lb.errors import UpstreamConnectError
from lb.upstream.connection import BackendConnection, Deadlines
from lb.upstream.reply import Reply

MAX_IDLE_PER_ENDPOINT = 256  # idle sockets kept per endpoint; more are closed when released


class EndpointPool:
    """The connections to one backend (scheme, host and port of its URL)."""

    def __init__(self, url: str, label: str) -> None:
        parts = urlsplit(url)
        self.label = label
        self.path_prefix = parts.path.rstrip("/")  # a backend mounted below the root
        self._host = parts.hostname or "localhost"
        self._is_tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._is_tls else 80)
        default_port = 443 if self._is_tls else 80
        self.host_header = self._host if self._port == default_port else \
            f"{self._host}:{self._port}"
        if ":" in self._host:  # an IPv6 literal
            self.host_header = f"[{self._host}]" + ("" if self._port == default_port
                                                     else f":{self._port}")
        self._idle: list[BackendConnection] = []
        self._ssl: ssl.SSLContext | None = None
        self._key: SecretStr | None = None
        self._endpoint_lines = self._lines_for(None)

    def endpoint_lines(self, key: SecretStr | None) -> bytes:
        """The header lines every request to this endpoint carries: Host, identity encoding
        (we parse SSE: never ask for compression) and the endpoint's own key, never the
        client's. Built again only when a reload gives the endpoint another key."""
        if key is not self._key:
            self._key, self._endpoint_lines = key, self._lines_for(key)
        return self._endpoint_lines

    def _lines_for(self, key: SecretStr | None) -> bytes:
        lines = f"Host: {self.host_header}\r\nAccept-Encoding: identity\r\n"
        if key is not None:
            lines += f"Authorization: Bearer {key.get_secret_value()}\r\n"
        return lines.encode("utf-8", "surrogateescape")

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def send(self, data: bytes, deadlines: Deadlines, connect_s: float) -> Reply:
        """One request on a pooled (or new) connection; an UpstreamError if no answer came."""
        conn = self._take()
        if conn is None:
            conn = await self._connect(connect_s)
            return await conn.request(data, deadlines)
        try:
            return await conn.request(data, deadlines)
        except UpstreamConnectError:
            if conn.got_bytes:
                raise
        conn = await self._connect(connect_s)  # the stale keep-alive race: once more, fresh
        return await conn.request(data, deadlines)

    def close(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()

    def _take(self) -> BackendConnection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.is_closed:
                return conn
        return None

    def _give_back(self, conn: BackendConnection) -> None:
        if len(self._idle) >= MAX_IDLE_PER_ENDPOINT:
            conn.abort()
        else:
            self._idle.append(conn)
            conn.idle()

    async def _connect(self, timeout_s: float) -> BackendConnection:
        loop = asyncio.get_running_loop()
        conn = BackendConnection(loop, self.label, self._give_back)
        tls = self._tls() if self._is_tls else None
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(lambda: conn, self._host, self._port, ssl=tls,
                                             server_hostname=self._host if tls else None)
        except TimeoutError as exc:
            raise UpstreamConnectError(f"connect to {self.label} timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(f"{self.label}: cannot connect: "
                                       f"{exc.strerror or type(exc).__name__}") from exc
        return conn

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl


class Pools:
    """Every endpoint's pool, keyed by its base URL (a reload that keeps the URL keeps them)."""

    def __init__(self) -> None:
        self._pools: dict[str, EndpointPool] = {}

    def get(self, url: str, label: str) -> EndpointPool:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = EndpointPool(url, label)
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def snapshot(self) -> Mapping[str, int]:
        return {url: pool.idle_count for url, pool in self._pools.items()}
