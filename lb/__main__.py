"""The `fleetlb` command: serve | check | sim (also `python -m lb`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lb.config import load_config
from lb.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetlb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="path to the TOML config file")
    source.add_argument("--demo", action="store_true",
                        help="start three simulated backends and serve the gateway in front of "
                             "them (no GPU, no config needed)")
    serve.add_argument("--host", help="override [server] host")
    serve.add_argument("--port", type=int, help="override [server] port")
    serve.add_argument("--log-format", choices=("json", "console"), default="json")
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check", help="validate a config and print the resolved pools")
    check.add_argument("config")
    check.set_defaults(func=_check)

    sim = sub.add_parser("sim", help="run a simulated OpenAI-compatible backend")
    from lb import sim as sim_module

    sim_module.configure_parser(sim)
    sim.set_defaults(func=sim_module.run)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from lb.serve import serve

    return serve(args)


def _check(args: argparse.Namespace) -> int:
    from lb.describe import config_warnings, describe_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(describe_config(config))
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
