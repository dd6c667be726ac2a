"""lb.redact: every configured secret and bearer-shaped token leaves quoted text, even cut text."""

from __future__ import annotations

import pytest

from lb.config import parse_config
from lb.redact import REDACTED, Redactor, redactor_for, secrets_of

SECRETS = ("sk-client-1111aaaa", "gpu-key-2222bbbb", "adm")


@pytest.mark.parametrize(("text", "expected"), [
    ("plain words stay", "plain words stay"),
    ("", ""),
    ("you sent gpu-key-2222bbbb!", f"you sent {REDACTED}!"),
    ("Authorization: Bearer abc.DEF-123", REDACTED),
    ("{'authorization': 'Bearer gpu-key-2222bbbb'}", "{'" + REDACTED + "'}"),
    ("x-api-key=zzz", REDACTED),
    ("token sk-abcdefghijklmnop here", f"token {REDACTED} here"),
    ("bearer lowercase-token", REDACTED),
    ("Basic dXNlcjpwYXNz", REDACTED),
    ("adm in the middle: xadmx", f"{REDACTED} in the middle: x{REDACTED}x"),
    ("non-utf8 \udcff gpu-key-2222bbbb", f"non-utf8 \udcff {REDACTED}"),
])
def test_text(text: str, expected: str) -> None:
    assert Redactor(SECRETS).text(text) == expected


@pytest.mark.parametrize("cut", range(1, len("gpu-key-2222bbbb")))
def test_a_cut_never_leaves_the_start_of_a_secret(cut: int) -> None:
    redactor, secret = Redactor(SECRETS), "gpu-key-2222bbbb"
    text = "x" * 50 + secret + " tail"
    # cut by the limit, or cut before redaction (a bounded read)
    for out in (redactor.text(text, 50 + cut), redactor.text(text[: 50 + cut])):
        assert out.startswith("x" * 50)
        assert not any(secret[:n] in out for n in range(3, len(secret) + 1)), out


def test_bytes_keep_what_is_not_utf8() -> None:
    redactor = Redactor(SECRETS)
    assert redactor.bytes(b"\xff\xfe gpu-key-2222bbbb") == b"\xff\xfe " + REDACTED.encode()
    assert redactor.bytes(b"\xff clean") == b"\xff clean"


def test_secrets_of_a_config_are_every_configured_secret() -> None:
    config = parse_config({
        "server": {"api_keys": ["sk-a-1", "sk-b-2"], "admin_key": "admin-3"},
        "responses": {"compaction_key": "compact-4"},
        "endpoints": [{"name": "a", "url": "http://127.0.0.1:1", "api_key_env": "K"}],
    }, env={"K": "ep-5"})
    assert sorted(secrets_of(config)) == ["admin-3", "compact-4", "ep-5", "sk-a-1", "sk-b-2"]
    assert redactor_for(config).text("sk-a-1 admin-3 ep-5") == " ".join([REDACTED] * 3)


def test_passwords_in_urls_are_secrets() -> None:
    config = parse_config({
        "redis": {"url": "redis://:redis-pw-6@127.0.0.1:6379/0"},
        "endpoints": [{"name": "a", "url": "http://u:ep-pw-7@127.0.0.1:1"}],
    })
    assert {"redis-pw-6", "ep-pw-7"} <= set(secrets_of(config))


def test_team_keys_are_secrets() -> None:
    config = parse_config({"keys": [{"name": "team-a", "key": "team-key-8"},
                                    {"name": "team-b", "key_env": "TB"}],
                           "endpoints": []}, env={"TB": "team-key-9"})
    assert {"team-key-8", "team-key-9"} <= set(secrets_of(config))
