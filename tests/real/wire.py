"""Raw HTTP for the real tests where the SDK hides what must be checked: status codes, headers,
and the exact SSE framing (`event:` lines, `data: [DONE]`).
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

TIMEOUT_S = 120.0  # per request; generation on a shared 2-core machine can be slow


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str | None  # the `event:` field, None when absent
    data: str


def request(method: str, url: str, body: Any = None) -> Reply:
    """One request with a JSON body (if any); the whole answer read."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=TIMEOUT_S)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, parts.path or "/", body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def post_json(url: str, body: Any) -> Reply:
    return request("POST", url, body)


def parse_sse(raw: bytes) -> list[SseEvent]:
    """Split an SSE body into events (LF or CRLF), joining multi-line data; comments dropped."""
    events = []
    text = raw.decode("utf-8").replace("\r\n", "\n")
    for block in text.split("\n\n"):
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if name is not None or data:
            events.append(SseEvent(name, "\n".join(data)))
    return events


class EventStream:
    """An SSE response read event by event, so a test can act between events."""

    def __init__(self, url: str, body: Any) -> None:
        parts = urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=TIMEOUT_S)
        self._conn.request(
            "POST",
            parts.path,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        self._response = self._conn.getresponse()
        self.status = self._response.status
        self.headers = {k.lower(): v for k, v in self._response.getheaders()}

    def next_event(self) -> SseEvent | None:
        """The next event; None at the end of the body."""
        block = b""
        while True:
            line = self._response.readline()
            if not line:
                events = parse_sse(block)
                return events[0] if events else None
            if line in (b"\n", b"\r\n"):
                events = parse_sse(block)
                if events:
                    return events[0]
                block = b""
                continue
            block += line

    def rest(self) -> list[SseEvent]:
        """Every remaining event, up to the end of the body."""
        events = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
