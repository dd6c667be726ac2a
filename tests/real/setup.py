"""`python -m tests.real.setup`: make or reuse everything the real-backend tests need, with timings.

CI runs it before pytest so that the slow steps (llama-server build, vLLM install) show up as
their own step with their own times. `--start` also starts each server once and times that.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from .cache import cache_root
from .llama import ensure_llama_server, start_llama_servers
from .process import ServerProcess
from .tinymodel import ensure_model
from .vllm import ensure_vllm, start_vllm_servers

T = TypeVar("T")


def timed(label: str, make: Callable[[], T]) -> T:
    """Run `make`, printing how long it took (a cached step shows as well under a second)."""
    print(f"[real-setup] {label} ...", flush=True)
    started = time.monotonic()
    result = make()
    print(f"[real-setup] {label}: {time.monotonic() - started:.1f} s", flush=True)
    return result


def start_once(label: str, start: Callable[[], list[ServerProcess]]) -> None:
    for server in timed(label, start):
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.real.setup", description=__doc__)
    parser.add_argument("--start", action="store_true", help="also start each server once")
    parser.add_argument("--no-vllm", action="store_true", help="skip the vLLM install")
    args = parser.parse_args(argv)
    print(f"[real-setup] cache: {cache_root()}", flush=True)
    model = timed("tiny model", ensure_model)
    llama = timed("llama-server build", ensure_llama_server)
    vllm = None if args.no_vllm else timed("vLLM install", ensure_vllm)
    print(f"[real-setup] model: {model.gguf} and {model.hf_dir}", flush=True)
    print(f"[real-setup] llama-server: {llama}; vLLM python: {vllm}", flush=True)
    if args.start:
        with tempfile.TemporaryDirectory(prefix="real-setup-") as folder:
            logs = Path(folder)
            start_once(
                "llama-server start", lambda: start_llama_servers(llama, model.gguf, 1, logs)
            )
            if vllm is not None:
                start_once("vLLM start", lambda: start_vllm_servers(vllm, model.hf_dir, 1, logs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
