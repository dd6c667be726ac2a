"""The things the bench sends load through: the backend itself (direct), fleetlb, and the peers
(the bare aiohttp relay that ships here, nginx and LiteLLM when installed). Each is started on a
free loopback port, with its config written to the run's own temp dir, and stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.backend import FAST_MODEL, SLOW_MODEL
from bench.child import Child, free_port, http_status
from bench.procfs import TreeSample

CLIENT_KEY = "sk-bench-client"  # the gateways run with auth on, as the bar asks
UNREACHED_RPM = 1_000_000_000  # the limits variants count every request, never refuse one
ADMIN_KEY = "sk-bench-admin"
LITELLM_VENV = Path(os.environ.get("FLEETLB_BENCH_LITELLM_VENV",
                                   Path.home() / ".cache/fleetlb-bench/litellm"))
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
LITELLM_START_TIMEOUT_S = 120.0  # imports half of PyPI before it listens
# limits: fleetlb with a rate-limited client key (in-process windows); redis: the same key with
# `[limits] shared = true` and the responses in a local redis-server (lb/shared)
PEERS = ("nginx", "litellm", "limits", "redis")


class NotInstalled(Exception):
    """An optional peer is missing; the message says how to install it."""


@dataclass(slots=True)
class Target:
    name: str
    base_url: str
    child: Child | None  # None: direct, nothing between client and backend
    headers: dict[str, str] = field(default_factory=dict)
    passthrough: bool = True  # relays stream bytes unchanged (so the event count is known)
    notes: list[str] = field(default_factory=list)
    helpers: list[Child] = field(default_factory=list)  # what it needs (redis-server), not sampled

    def sample(self) -> TreeSample | None:
        return self.child.sample() if self.child is not None else None

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
        for helper in reversed(self.helpers):
            helper.stop()


@dataclass(frozen=True, slots=True)
class Context:
    backend_url: str
    workdir: Path
    client_keys: int = 0  # named [[keys]] for fleetlb builds that know them (lb/teams)


Starter = Callable[[Context], Target]


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def start_direct(ctx: Context) -> Target:
    return Target("direct", ctx.backend_url, None, {"Content-Type": "application/json"})


def fleetlb_config(port: int, backend_url: str, store: Path | None = None,
                   redis_url: str | None = None, limits: bool = False) -> str:
    """As deployed: auth, the default SQLite response store (in the bench's own folder). With
    `limits` the client key is a `[[keys]]` entry with limits far above what the bench sends (the
    cost of counting, never of refusing); with `redis_url` its limits are counted and the
    responses stored in that Redis, as several instances would share them."""
    store_path = store or Path("responses.db")
    store_toml = f'path = "{store_path}"' if redis_url is None else \
        f'kind = "redis"\n\n[redis]\nurl = "{redis_url}"\n\n[limits]\nshared = true'
    client = f'api_keys = ["{CLIENT_KEY}"]' if not limits else ""
    keys = "" if not limits else f"""
[[keys]]
name = "bench"
key = "{CLIENT_KEY}"
rpm = {UNREACHED_RPM}
tpm = {UNREACHED_RPM * 1000}
max_in_flight = 100000
"""
    return f"""\
[server]
host = "127.0.0.1"
port = {port}
{client}
admin_key = "{ADMIN_KEY}"

[store]
{store_toml}
{keys}
[[endpoints]]
name = "bench-backend"
url = "{backend_url}"
kind = "openai"
responses = "translate"
models = ["{FAST_MODEL}", "{SLOW_MODEL}"]
"""


def client_keys_toml(n: int) -> str:
    """`n` named keys with limits too high to refuse the bench; the last one is the bench's, so
    model access and every limit are checked on each request."""
    entries = [f'[[keys]]\nname = "team-{i}"\nkey = "sk-bench-team-{i}"\nrpm = 600\n'
               for i in range(n - 1)]
    entries.append(f'[[keys]]\nname = "bench"\nkey = "{CLIENT_KEY}"\nmodels = ["bench*"]\n'
                   "rpm = 100000000\ntpm = 1000000000\nmax_in_flight = 100000\n")
    return "\n" + "\n".join(entries)


def start_fleetlb(ctx: Context, name: str = "fleetlb", tree: Path = REPO,
                  keyless: bool = False) -> Target:
    """fleetlb from the source tree `tree` (`python -m lb` there imports that tree's lb), so two
    builds can be compared in one interleaved run. `keyless`: one [server] api_keys key whatever
    the plan's client_keys (the same build with and without named keys, for the teams A/B)."""
    port = free_port()
    config = ctx.workdir / f"{name}.toml"
    text = fleetlb_config(port, ctx.backend_url, ctx.workdir / f"{name}.db")
    teams = ctx.client_keys and not keyless and (tree / "lb" / "teams").is_dir()
    if teams:
        text = text.replace(f'api_keys = ["{CLIENT_KEY}"]\n', "") + client_keys_toml(
            ctx.client_keys)
    config.write_text(text)
    # JSON access lines are rendered for every request and written to a file, as in production
    child = Child(name, [sys.executable, "-m", "lb", "serve", "--config", str(config),
                         "--log-format", "json"], ctx.workdir / f"{name}.log", cwd=tree)
    target = Target(name, _url(port), child, _bearer(CLIENT_KEY))
    if ctx.client_keys:
        target.notes.append(f"{ctx.client_keys} named [[keys]] with limits" if teams else
                            "one [server] api_keys key (--keyless)" if keyless else
                            "no lb/teams in this build: one [server] api_keys key")
    _started(target, lambda: child.wait_http(target.base_url + "/readyz", START_TIMEOUT_S))
    metrics = http_status(target.base_url + "/metrics", _bearer(ADMIN_KEY))
    target.notes.append("metrics on (/metrics answers)" if metrics == 200 else
                        f"no /metrics in this build (HTTP {metrics}): benched without metrics")
    return target


def start_redis_server(workdir: Path) -> tuple[Child, str]:
    """A local redis-server without persistence, as the Redis the instances share."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise NotInstalled("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    child = Child("redis-server", [binary, "--port", str(port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                  workdir / "redis-server.log")
    try:
        child.wait_tcp(port, START_TIMEOUT_S)
    except BaseException:
        child.stop()
        raise
    return child, f"redis://127.0.0.1:{port}/0"


def start_fleetlb_limits(ctx: Context) -> Target:
    """fleetlb whose client key has rpm, tpm and max_in_flight, counted in process."""
    return _start_variant(ctx, "fleetlb-limits", None,
                          "client key with rpm/tpm/max_in_flight, in-process windows")


def start_fleetlb_redis(ctx: Context) -> Target:
    """The same key with `[limits] shared = true`, responses in Redis: what sharing state costs
    the gateway (redis-server's own CPU is not in its process tree, so not in its numbers)."""
    redis, redis_url = start_redis_server(ctx.workdir)
    try:
        target = _start_variant(ctx, "fleetlb-redis", redis_url,
                                "limits shared and responses stored in a local redis-server "
                                "(its CPU not counted)")
    except BaseException:
        redis.stop()
        raise
    target.helpers.append(redis)
    return target


def _start_variant(ctx: Context, name: str, redis_url: str | None, note: str) -> Target:
    port = free_port()
    config = ctx.workdir / f"{name}.toml"
    config.write_text(fleetlb_config(port, ctx.backend_url, ctx.workdir / f"{name}.db",
                                     redis_url=redis_url, limits=True))
    child = Child(name, [sys.executable, "-m", "lb", "serve", "--config", str(config),
                         "--log-format", "json"], ctx.workdir / f"{name}.log", cwd=REPO)
    target = Target(name, _url(port), child, _bearer(CLIENT_KEY))
    _started(target, lambda: child.wait_http(target.base_url + "/readyz", START_TIMEOUT_S))
    target.notes.append(note)
    return target


def start_relay(ctx: Context) -> Target:
    port = free_port()
    child = Child("relay", [sys.executable, "-m", "bench.relay", "--port", str(port),
                            "--upstream", ctx.backend_url], ctx.workdir / "relay.log", cwd=REPO,
                  env={"PYTHONPATH": str(REPO)})
    target = Target("relay", _url(port), child, {"Content-Type": "application/json"})
    _started(target, lambda: child.wait_http(target.base_url + "/", START_TIMEOUT_S,
                                             ready=(404, 405)))
    return target


def nginx_config(port: int, backend_url: str, prefix: Path) -> str:
    backend = backend_url.removeprefix("http://")
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""\
daemon off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
{temp}
    upstream backend {{ server {backend}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def start_nginx(ctx: Context) -> Target:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                       else None)
    if binary is None:
        raise NotInstalled("nginx is not installed (bench/setup --peers nginx)")
    prefix = ctx.workdir / "nginx"
    prefix.mkdir()
    prefix.chmod(0o777)  # the worker may run as nobody and needs its temp dirs
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(port, ctx.backend_url, prefix))
    child = Child("nginx", [binary, "-p", str(prefix), "-c", str(conf), "-e",
                            str(prefix / "error.log")], ctx.workdir / "nginx.log")
    target = Target("nginx", _url(port), child, {"Content-Type": "application/json"})
    _started(target, lambda: child.wait_http(target.base_url + "/v1/models", START_TIMEOUT_S))
    return target


def litellm_config(backend_url: str) -> str:
    models = "".join(f"""\
  - model_name: {name}
    litellm_params:
      model: openai/{name}
      api_base: {backend_url}/v1
      api_key: sk-backend
""" for name in (FAST_MODEL, SLOW_MODEL))
    return f"""\
model_list:
{models}general_settings:
  master_key: {CLIENT_KEY}
litellm_settings:
  telemetry: false
"""


def start_litellm(ctx: Context) -> Target:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        raise NotInstalled(f"LiteLLM is not installed in {LITELLM_VENV} "
                           "(bench/setup --peers litellm)")
    port = free_port()
    config = ctx.workdir / "litellm.yaml"
    config.write_text(litellm_config(ctx.backend_url))
    child = Child("litellm", [str(binary), "--config", str(config), "--host", "127.0.0.1",
                              "--port", str(port), "--num_workers", "1"],
                  ctx.workdir / "litellm.log",
                  env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
                       "LITELLM_LOG": "ERROR", "NO_DOCS": "True"})
    target = Target("litellm", _url(port), child, _bearer(CLIENT_KEY), passthrough=False)
    _started(target, lambda: child.wait_http(target.base_url + "/health/liveliness",
                                             LITELLM_START_TIMEOUT_S))
    return target


def _started(target: Target, wait: Callable[[], None]) -> None:
    """Wait for the target; stop it (by PID) if it never comes up."""
    try:
        wait()
    except BaseException:
        target.stop()
        raise


STARTERS: dict[str, Starter] = {
    "direct": start_direct, "fleetlb": start_fleetlb, "relay": start_relay,
    "nginx": start_nginx, "litellm": start_litellm,
    "limits": start_fleetlb_limits, "redis": start_fleetlb_redis,
}
