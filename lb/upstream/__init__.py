"""The one place that speaks HTTP to backends.

- `client`: `Upstream`, what the rest of the gateway calls: proxied requests through the lean
  keep-alive client below; the shared aiohttp ClientSession for the prober, the Ollama fan-out and
  model pulls; timeouts and header hygiene for both.
- `pool`: keep-alive connections per endpoint, requests as one prebuilt bytes buffer.
- `connection`: one connection, an asyncio.Protocol around httptools (llhttp); one lazily rearmed
  timer per connection for the connect/first-byte/idle/total timeouts.
- `reply`: one response on it, its body pulled or pushed into a sink; the rest of a body its
  reader left early, read so the connection can be pooled.
"""

from lb.upstream.client import (
    HOP_BY_HOP,
    Upstream,
    UpstreamCall,
    body_chunks,
    forwardable_headers,
    read_body,
    reply_chunks,
    returnable_headers,
)
from lb.upstream.connection import Deadlines
from lb.upstream.reply import BodySink, Reply

__all__ = ["HOP_BY_HOP", "BodySink", "Deadlines", "Reply", "Upstream", "UpstreamCall",
           "body_chunks", "forwardable_headers", "read_body", "reply_chunks",
           "returnable_headers"]
