"""deploy/systemd as shipped: the unit's content (CI also runs `systemd-analyze verify` on it), the
example config and secrets, and the README's install commands."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lb.__main__ import _parser
from lb.config import load_config
from lb.drain import CUT_GRACE_S

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "systemd"
UNIT = DEPLOY / "fleetlb.service"
Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """systemd's ini dialect: a key may repeat; `#` and `;` lines are comments."""
    unit: Unit = {}
    section: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def parse_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {key: value for key, value in pairs}


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", value)
    assert match, value
    return float(match[1]) * (60 if match[2] == "min" else 1)


@pytest.mark.parametrize(("key", "value"), [
    ("Type", "notify"),
    ("NotifyAccess", "main"),
    ("ExecStart", "/opt/fleetlb/bin/fleetlb serve --config /etc/fleetlb/fleetlb.toml"),
    ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ("Restart", "on-failure"),
    ("StateDirectory", "fleetlb"),
    ("WorkingDirectory", "/var/lib/fleetlb"),
    ("User", "fleetlb"),
    ("EnvironmentFile", "/etc/fleetlb/fleetlb.env"),
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
    ("SystemCallFilter", "@system-service"),
    ("MemoryDenyWriteExecute", "yes"),
])
def test_unit_sets(service: dict[str, list[str]], key: str, value: str) -> None:
    assert service.get(key) == [value]


def test_unit_install_and_ordering() -> None:
    unit = parse_unit(UNIT.read_text())
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert unit["Unit"]["After"] == ["network-online.target"]


def test_timeouts_fit_the_drain_and_the_watchdog(service: dict[str, list[str]]) -> None:
    config = load_config(DEPLOY / "fleetlb.toml", env=parse_env_file(DEPLOY / "fleetlb.env"))
    stop_s = seconds(service["TimeoutStopSec"][0])
    assert stop_s > config.server.drain_timeout + CUT_GRACE_S
    assert seconds(service["WatchdogSec"][0]) >= 2 * config.probes.timeout  # no false restarts


def test_exec_start_is_a_valid_fleetlb_command(service: dict[str, list[str]]) -> None:
    argv = shlex.split(service["ExecStart"][0])
    assert argv[0] == "/opt/fleetlb/bin/fleetlb"
    args = _parser().parse_args(argv[1:])
    assert (args.command, args.config, args.log_format) == ("serve", "/etc/fleetlb/fleetlb.toml",
                                                            "json")


def test_example_config_validates_with_the_example_secrets() -> None:
    config = load_config(DEPLOY / "fleetlb.toml", env=parse_env_file(DEPLOY / "fleetlb.env"))
    assert config.server.admin_key is not None
    assert config.server.client_keys() == {"sk-team-a-change-me"}  # from api-keys beside it
    assert {ep.name for ep in config.endpoints} == {"gpu-a", "gpu-b"}
    gpu_b = config.endpoint("gpu-b")
    assert gpu_b is not None and gpu_b.api_key is not None


def readme_service_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run as a service", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's service section has its commands in a sh block"
    return block[1]


def test_readme_commands_match_the_unit_and_the_files(service: dict[str, list[str]]) -> None:
    commands = readme_service_block()
    for shipped in re.findall(r"deploy/systemd/[\w.-]+", commands):
        assert (ROOT / shipped).is_file(), shipped
    assert {p.name for p in DEPLOY.iterdir()} <= set(re.findall(r"deploy/systemd/([\w.-]+)",
                                                                commands))
    assert "/opt/fleetlb/bin/pip install ." in commands  # what ExecStart runs is installed
    assert service["EnvironmentFile"][0] in commands
    assert "/etc/fleetlb/fleetlb.toml" in commands
    assert "systemctl enable --now fleetlb" in commands
    assert "systemctl reload fleetlb" in commands


def test_readme_check_command_passes_on_the_shipped_files() -> None:
    """The README's `fleetlb check` line, run on deploy/systemd instead of /etc/fleetlb."""
    line = next(ln for ln in readme_service_block().splitlines() if "fleetlb check" in ln)
    command = shlex.split(line.removeprefix("sudo "))
    assert command[:2] == ["sh", "-c"]
    script = (command[2].replace("/etc/fleetlb/", f"{DEPLOY}/")
              .replace("/opt/fleetlb/bin/fleetlb", f"{sys.executable} -m lb"))
    done = subprocess.run(["sh", "-c", script], capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert b"admin key set" in done.stdout and b"change-me" not in done.stdout
