"""`python -m lb.sim --port N`: the simulated backend without the fleetlb CLI around it."""

from __future__ import annotations

import argparse
import sys

from lb.sim.cli import configure_parser, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lb.sim", description="A simulated LLM backend."
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
