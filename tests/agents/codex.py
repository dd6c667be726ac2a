"""OpenAI's Codex CLI as a test client: installed once from npm (a pinned version) into the tests'
cache folder, run as `codex exec` against a fleetlb URL with its own CODEX_HOME.

The npm package wraps a native binary; `npm install` takes a few seconds and ~400 MB, once per
machine. Codex talks to fleetlb through a provider entry (`wire_api = "responses"`), the config
the README documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.real.cache import cache_root, publish

CODEX_VERSION = "0.171.0"  # pinned: its request shape (tools, keys) is what the tests expect
INSTALL_TIMEOUT_S = 600.0  # npm fetches ~150 MB on first use
RUN_TIMEOUT_S = 45.0  # one `codex exec` turn against a fast backend; inside pytest's 60 s
KEY_ENV = "FLEETLB_KEY"


def codex_binary() -> Path:
    """The cached `codex` launcher of CODEX_VERSION; installed with npm first if missing."""
    root = cache_root() / "codex" / CODEX_VERSION
    launcher = root / "node_modules" / ".bin" / "codex"
    with _lock(cache_root() / "codex-install.lock"):
        if launcher.exists():
            return launcher
        if shutil.which("npm") is None:
            raise RuntimeError("npm is needed to install Codex CLI (Debian: apt-get install npm)")
        staging = root.with_name(root.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(["npm", "install", "--prefix", str(staging), "--no-audit", "--no-fund",
                        "--loglevel=error", f"@openai/codex@{CODEX_VERSION}"],
                       check=True, timeout=INSTALL_TIMEOUT_S, capture_output=True)
        publish(staging, root)
    return launcher


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def provider_config(base_url: str, model: str, extra: str = "") -> str:
    """The config.toml that points Codex at fleetlb (what the README shows), plus `extra` lines
    of its provider entry."""
    return "\n".join([
        f'model = "{model}"',
        'model_provider = "fleetlb"',
        "",
        "[model_providers.fleetlb]",
        'name = "fleetlb"',
        f'base_url = "{base_url}"',
        'wire_api = "responses"',
        f'env_key = "{KEY_ENV}"',
        extra,
        "",
    ])


@dataclass(frozen=True, slots=True)
class CodexRun:
    returncode: int
    stdout: str
    stderr: str


def _prepare(home: Path, workdir: Path, config: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config)


async def codex_exec(binary: Path, home: Path, workdir: Path, base_url: str, key: str,
                     prompt: str, model: str = "m1",
                     timeout_s: float = RUN_TIMEOUT_S, provider_extra: str = "") -> CodexRun:
    """`codex exec` one prompt; killed by PID (its whole process group) if it overruns."""
    config = provider_config(base_url, model, provider_extra)
    await asyncio.to_thread(_prepare, home, workdir, config)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "CODEX_HOME": str(home),
           KEY_ENV: key, "NO_COLOR": "1", "RUST_LOG": "error"}
    process = await asyncio.create_subprocess_exec(
        str(binary), "exec", "--skip-git-repo-check", "--sandbox", "danger-full-access", prompt,
        cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = await process.communicate()
        raise AssertionError(f"codex exec did not end within {timeout_s} s:\n"
                             f"{err.decode(errors='replace')[-3000:]}") from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    code = process.returncode if process.returncode is not None else -1
    return CodexRun(code, out.decode(errors="replace"),
                    err.decode(errors="replace"))
