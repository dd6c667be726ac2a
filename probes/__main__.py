"""`python -m probes --config PATH`: probe each endpoint once, print a table; exit 1 if one is down.

Exit codes: 0 all healthy, 1 at least one endpoint down, 2 the config cannot be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lb.config import ProbesConfig, load_config
from lb.endpoints import Endpoint, Fleet, HealthState
from lb.errors import ConfigError
from probes.checks import CheckResult, new_session
from probes.prober import Prober

EXIT_OK = 0
EXIT_DOWN = 1
EXIT_CONFIG = 2
COLUMNS = ("NAME", "KIND", "URL", "STATE", "LATENCY_MS", "MODELS", "RESPONSES", "ERROR")
_RESPONSES_TEXT = {True: "yes", False: "no", None: "?"}


class SilentLog:
    """The CLI's table says everything the prober would log."""

    def info(self, event: str, **kw: Any) -> None:
        pass

    def error(self, event: str, **kw: Any) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probes", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="path of the fleetlb TOML config")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    fleet = Fleet.from_configs(config.endpoints)
    results = asyncio.run(probe_fleet(fleet, config.probes))
    print(render_table([row(e, results[e.name]) for e in fleet]))
    is_down = any(e.state is not HealthState.HEALTHY for e in fleet)
    return EXIT_DOWN if is_down else EXIT_OK


async def probe_fleet(fleet: Fleet, config: ProbesConfig) -> dict[str, CheckResult]:
    """Probe every endpoint once, all at the same time."""
    async with new_session() as session:
        prober = Prober(
            lambda: fleet,
            config,
            session,
            clock=time.monotonic,
            rng=random.Random(),
            log=SilentLog(),
        )
        endpoints = list(fleet)
        results = await asyncio.gather(*(prober.probe_once(e) for e in endpoints))
    return {e.name: r for e, r in zip(endpoints, results, strict=True)}


def row(endpoint: Endpoint, result: CheckResult) -> tuple[str, ...]:
    return (
        endpoint.name,
        endpoint.config.kind,
        redact_url(endpoint.config.url),
        str(endpoint.state),
        f"{result.latency_ms:.1f}",
        ",".join(sorted(endpoint.discovered_models)) or "-",
        _RESPONSES_TEXT[endpoint.supports_responses_api],
        result.error or "-",
    )


def render_table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, under a header line."""
    table = [COLUMNS, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
    )


def redact_url(url: str) -> str:
    """The URL without `user:password@`: the table goes to terminals and CI logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


if __name__ == "__main__":
    sys.exit(main())
