"""Every tenant gets its own random pseudonym key: at ``stack up`` for the tenants the settings know, and
when ``gateway provision`` brings a new tenant; keys are private files and never placeholders."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from citystream.settings import Settings, load_settings
from citystream.stack import identities, local
from citystream.stack.identities import GatewayIdentity
from tests.conftest import citystream


def _stack(home: Path, **overrides: Any) -> Path:
    """What ``stack up`` does to the settings and the stack home (no servers): the written settings file."""
    s = Settings.model_validate({"stack": {"home": str(home)}, **overrides})
    return local.write_config_file(local.local_settings(s))


def _keys(config: Path) -> dict[str, str]:
    keys: dict[str, str] = yaml.safe_load(config.read_text())["worker"]["pseudonym_keys"]
    return keys


def _creds(home: Path) -> dict[str, str]:
    creds: dict[str, str] = orjson.loads((home / "credentials.json").read_bytes())
    return creds


def _random(key: str) -> bool:
    return len(key) >= 43 and len(set(key)) > 10 and "*" not in key


@pytest.mark.unit
def test_stack_up_gives_every_known_tenant_its_own_random_private_key(tmp_path: Path) -> None:
    home = tmp_path / "a"
    home.mkdir()
    identities.save(home, [GatewayIdentity(tenant="lampang", gateway="gw-1", root="city", password_hash="$7$x",
                                           provisioned_at="2026-12-08T00:00:00+00:00")])
    analyst = {"role": "analyst", "password_hash": f"scrypt$16384$8$1${'00' * 16}${'11' * 32}",
               "tenants": ["pathum-pao"]}
    config = _stack(home, gateway={"tenant": "nakhon-rangsit"}, console={"users": {"malee": analyst}})
    keys = _keys(config)
    assert set(keys) == {"*", "nakhon-rangsit", "pathum-pao", "lampang"}  # simulator, console, registry
    assert len(set(keys.values())) == 4 and all(_random(k) for k in keys.values())
    creds = _creds(home)
    assert {t: creds["pseudonym" if t == "*" else f"pseudonym:{t}"] for t in keys} == keys
    for path in (config, home / "credentials.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    s = load_settings(config)
    assert s.worker.pseudonym_key("pathum-pao") != s.worker.pseudonym_key("lampang") != s.worker.pseudonym_key("x")

    again = _keys(_stack(home, gateway={"tenant": "nakhon-rangsit"}))  # the next `stack up` keeps every key
    assert again == keys
    other = _keys(_stack(tmp_path / "b", gateway={"tenant": "nakhon-rangsit"}))
    assert other["nakhon-rangsit"] != keys["nakhon-rangsit"] and other["*"] != keys["*"]  # per stack home


@pytest.mark.unit
def test_provisioning_a_gateway_of_a_new_tenant_makes_that_tenant_a_key(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    config = _stack(home, gateway={"tenant": "nakhon-rangsit"})
    before = _keys(config)
    assert "chiang-mai" not in before

    out = orjson.loads(citystream("gateway", "provision", "--tenant", "chiang-mai", "--gateway", "gw-1", "--json",
                                  config=config).stdout)
    assert set(out) == {"username", "password", "topic_prefix"}  # the contract is unchanged
    after = _keys(config)
    assert set(after) == {*before, "chiang-mai"} and _random(after["chiang-mai"])
    assert all(after[t] == before[t] for t in before), "existing keys stay"
    assert after["chiang-mai"] not in before.values()
    assert _creds(home)["pseudonym:chiang-mai"] == after["chiang-mai"]
    for path in (config, home / "credentials.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert load_settings(config).worker.pseudonym_key("chiang-mai") == after["chiang-mai"].encode()

    citystream("gateway", "provision", "--tenant", "chiang-mai", "--gateway", "gw-2", config=config)
    assert _keys(config) == after, "a second gateway of the tenant keeps its key"
    citystream("gateway", "provision", "--tenant", "nakhon-rangsit", "--gateway", "gw-9", config=config)
    assert _keys(config) == after


@pytest.mark.unit
def test_keys_an_operator_configured_are_not_replaced_by_a_provision(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    config = _stack(home)
    doc = yaml.safe_load(config.read_text())
    doc["worker"]["pseudonym_keys"] = {"*": "k" * 44}  # from the operator's secret store
    config.write_text(yaml.safe_dump(doc))
    citystream("gateway", "provision", "--tenant", "surin", "--gateway", "gw-1", config=config)
    assert _keys(config) == {"*": "k" * 44}
    assert _random(_creds(home)["pseudonym:surin"])  # the stack has one ready if the operator's keys go
