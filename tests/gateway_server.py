"""The test server of a gateway app: aiohttp's TestServer, serving through lb.dispatch (as
`fleetlb serve` does), so the tests go down the same request path as production."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner

from lb.dispatch import GatewayRunner


class GatewayTestServer(TestServer):
    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return GatewayRunner(self.app, **kwargs)
