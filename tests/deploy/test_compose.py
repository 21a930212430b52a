"""docker-compose.yml against the Compose specification schema, and the roles, topic job and health checks it must have.

No Docker engine runs here, so nothing is started: ``compose-spec.json`` is the specification's schema
(compose-spec/compose-spec, schema/compose-spec.json at commit 170098ba07d9, Apache-2.0), validated
with jsonschema (dev extra).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
STAGES = ("bridge", "worker", "sink")
ROLES = (*STAGES, "topics", "simulator", "console")


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def dockerfile_targets() -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (REPO / "Dockerfile").read_text(), re.M | re.I))


def test_the_compose_file_matches_the_compose_specification() -> None:
    try:
        import jsonschema
    except ImportError:
        pytest.fail("jsonschema not installed: pip install -e '.[dev]' (make setup does)")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_the_schema_check_catches_a_bad_file() -> None:
    import jsonschema

    bad = json.loads(json.dumps(compose()))  # a deep copy: YAML anchors share objects between services
    bad["services"]["bridge"]["restart_policy"] = "always"  # not a Compose key
    bad["services"]["sink"]["depends_on"]["kafka"]["condition"] = "service_maybe"
    errors = list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(bad))
    assert sorted(e.absolute_path[1] for e in errors) == ["bridge", "sink"], [e.message for e in errors]


def test_every_service_has_a_health_check() -> None:
    for name, svc in compose()["services"].items():
        check = svc.get("healthcheck")
        if name == "topics":  # a job: its success is what the stages wait for
            assert check == {"disable": True}
            continue
        assert check and check.get("test"), f"{name} has no health check"


def test_roles_build_their_own_dockerfile_target_and_wait_for_the_topic_job() -> None:
    services = compose()["services"]
    targets = dockerfile_targets()
    for role in ROLES:
        build = services[role]["build"]
        assert build["target"] in targets, role
        assert services[role]["image"].startswith(f"citystream-{build['target']}:"), role
    assert services["topics"]["command"][:2] == ["topics", "apply"]
    assert services["topics"]["restart"] == "no"
    for stage in STAGES:
        svc = services[stage]
        assert svc["depends_on"]["topics"] == {"condition": "service_completed_successfully"}, stage
        assert "9100/readyz" in " ".join(svc["healthcheck"]["test"]), stage


def test_stages_run_locked_down_with_stable_identities_and_volumes() -> None:
    services = compose()["services"]
    for role in ROLES:
        svc = services[role]
        assert svc["user"] == "10001:10001" and svc["read_only"] is True, role
        assert svc["cap_drop"] == ["ALL"] and "no-new-privileges:true" in svc["security_opt"], role
        assert any(t.startswith("/tmp") for t in svc["tmpfs"]), role
    env = {s: services[s]["environment"] for s in STAGES}
    assert env["bridge"]["CITYSTREAM_BRIDGE__CLIENT_ID"]
    assert env["worker"]["CITYSTREAM_WORKER__INSTANCE_ID"] and env["sink"]["CITYSTREAM_SINK__INSTANCE_ID"]
    for stage, key in (("worker", "CITYSTREAM_WORKER__DATA_DIR"), ("sink", "CITYSTREAM_SINK__FRAMES_DIR")):
        assert env[stage][key].startswith("/var/lib/citystream/"), stage
        assert any(v.endswith(":/var/lib/citystream") for v in services[stage]["volumes"]), stage


def test_mosquitto_has_a_tls_listener_ready_to_enable() -> None:
    services = compose()["services"]
    assert "8883:8883" in services["mosquitto"]["ports"]
    conf = (REPO / "deploy" / "compose" / "mosquitto.conf").read_text()
    assert "include_dir /mosquitto/config/conf.d" in conf
    tls = (REPO / "deploy" / "compose" / "mosquitto.d" / "tls.conf.example").read_text()
    assert re.search(r"^listener 8883", tls, re.M) and "certfile /mosquitto/certs/server.crt" in tls


def test_the_console_serves_its_port_with_logins_from_the_environment() -> None:
    svc = compose()["services"]["console"]
    env = svc["environment"]
    assert svc["command"] == ["console"] and "8088:8088" in svc["ports"]
    assert (env["CITYSTREAM_CONSOLE__HOST"], env["CITYSTREAM_CONSOLE__PORT"]) == ("0.0.0.0", "8088")
    # secrets only by reference to the operator's environment, required at `up`
    assert env["CITYSTREAM_CONSOLE__SESSION_SECRET"] == "${CONSOLE_SESSION_SECRET:?set CONSOLE_SESSION_SECRET}"
    assert env["CITYSTREAM_CONSOLE__USERS"] == "${CONSOLE_USERS:?set CONSOLE_USERS}"
    assert not any(key.startswith("CITYSTREAM_MQTT__") for key in env), "the console needs no MQTT login"
    assert "8088/healthz" in " ".join(svc["healthcheck"]["test"])
    # frames from the sink's volume, read-only, where the console looks for them
    assert "sink-data:/srv/sink:ro" in svc["volumes"] and env["CITYSTREAM_SINK__FRAMES_DIR"] == "/srv/sink/frames"
    assert svc["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
    assert svc["depends_on"]["clickhouse"] == {"condition": "service_healthy"}
