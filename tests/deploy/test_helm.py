"""The Helm chart: `helm lint --strict`, and `helm template` output validated offline against the Kubernetes schemas.

`helm` is built by `make setup` (deploy/local/setup.sh: `go install` into .cache/bin); kubernetes-validate
(dev extra) ships the Kubernetes JSON schemas. A missing tool fails the test with the fix, never skips.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from citystream.settings import load_settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "citystream"
RULES = REPO / "deploy" / "prometheus" / "rules"
KUBE_VERSION = "1.37.0"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
STAGES = ("bridge", "worker", "sink")
IDENTITY = {"bridge": "CITYSTREAM_BRIDGE__CLIENT_ID", "worker": "CITYSTREAM_WORKER__INSTANCE_ID",
            "sink": "CITYSTREAM_SINK__INSTANCE_ID"}
DATA_DIR = "/var/lib/citystream"


def helm_binary() -> str:
    """The helm that make setup built (.cache/bin/helm), else one on PATH; fail with the fix when neither."""
    cached = REPO / ".cache" / "bin" / "helm"
    if cached.is_file():
        return str(cached)
    found = shutil.which("helm")
    if found is None:
        pytest.fail("helm not found in .cache/bin or on PATH: run 'make setup' "
                    "(deploy/local/setup.sh builds it with go install helm.sh/helm/v3/cmd/helm)")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120, cwd=REPO)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def render(*values: str | Path, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """`helm template` of the chart with the given values files and --set flags, as documents."""
    args = ["template", "cs", str(CHART), "--namespace", "city", "--kube-version", KUBE_VERSION]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template of the release by workload name (StatefulSets, Deployments, Jobs)."""
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs
            if d["kind"] in ("StatefulSet", "Deployment", "Job")}


RENDER_CASES = [pytest.param((), (), id="defaults"), *(pytest.param((p,), (), id=p.stem) for p in EXAMPLES),
                pytest.param((), ("simulator.enabled=true", "networkPolicy.enabled=false", "topics.enabled=false",
                                  "monitoring.serviceMonitor.enabled=false"), id="simulator-no-policies")]


@pytest.mark.parametrize("values", [(), *((p,) for p in EXAMPLES)], ids=["defaults", *(p.stem for p in EXAMPLES)])
def test_helm_lint_strict(values: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for v in values:
        args += ["-f", str(v)]
    res = helm(*args)
    assert "0 chart(s) failed" in res.stdout


@pytest.mark.parametrize(("values", "sets"), RENDER_CASES)
def test_rendered_manifests_match_the_kubernetes_schemas(values: tuple[Path, ...], sets: tuple[str, ...]) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate not installed: pip install -e '.[dev]' (make setup does)")
    docs = render(*values, sets=sets)
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: checked by test_monitoring_reuses_the_prometheus_rules
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 8


def test_the_bridge_is_a_statefulset_whose_client_id_is_the_pod_name() -> None:
    docs = render()
    sets = by_kind(docs, "StatefulSet")
    bridge = sets["cs-bridge"]
    assert bridge["spec"]["replicas"] >= 2 and bridge["spec"]["serviceName"] in by_kind(docs, "Service")
    env = {e["name"]: e for e in bridge["spec"]["template"]["spec"]["containers"][0]["env"]}
    # a StatefulSet pod keeps its name (cs-bridge-0, cs-bridge-1 ...) across restarts and rollouts, so the
    # MQTT client id - and with it the broker's persistent session and queued messages - survives
    assert env["CITYSTREAM_BRIDGE__CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "value" not in env["CITYSTREAM_BRIDGE__CLIENT_ID"]
    settings = yaml.safe_load(by_kind(docs, "ConfigMap")["cs-settings"]["data"]["citystream.yaml"])
    assert not settings.get("bridge", {}).get("client_id"), "a fixed client id in the ConfigMap would be shared"


def test_worker_and_sink_use_static_membership_from_the_pod_name() -> None:
    sets = by_kind(render(), "StatefulSet")
    for stage in ("worker", "sink"):
        env = {e["name"]: e for e in sets[f"cs-{stage}"]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env[IDENTITY[stage]]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", stage


@pytest.mark.parametrize("sets", [(), ("simulator.enabled=true",)], ids=["defaults", "simulator"])
def test_every_stage_has_health_probes_on_the_metrics_port(sets: tuple[str, ...]) -> None:
    docs = render(sets=sets)
    workloads = {n: d for n, d in pod_specs(docs).items() if not n.endswith(("-topics", "-console"))}
    assert set(workloads) >= {f"cs-{s}" for s in STAGES}
    if sets:
        assert "cs-simulator" in workloads
    for name, spec in workloads.items():
        container = spec["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == 9100, name
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, name


def test_the_topic_job_runs_topics_apply_before_install_and_upgrade() -> None:
    docs = render()
    job = by_kind(docs, "Job")["cs-topics"]
    notes = job["metadata"]["annotations"]
    assert set(notes["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-3:-1] == ["topics", "apply"]
    # hooks run before the release's resources: the Job's settings are a hook too, created first
    mounted = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}["settings"]["configMap"]["name"]
    hook_cm = by_kind(docs, "ConfigMap")[mounted]
    assert int(hook_cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(notes["helm.sh/hook-weight"])
    assert hook_cm["data"] == by_kind(docs, "ConfigMap")["cs-settings"]["data"]


@pytest.mark.parametrize("sets", [(), ("simulator.enabled=true",)], ids=["defaults", "simulator"])
def test_every_pod_is_locked_down(sets: tuple[str, ...]) -> None:
    for name, spec in pod_specs(render(sets=sets)).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["privileged"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name


@pytest.mark.parametrize("values", [(), *((p,) for p in EXAMPLES)], ids=["defaults", *(p.stem for p in EXAMPLES)])
def test_every_writable_path_is_a_volume_and_the_settings_validate(values: tuple[Path, ...], tmp_path: Path) -> None:
    docs = render(*values)
    text = by_kind(docs, "ConfigMap")["cs-settings"]["data"]["citystream.yaml"]
    assert ".citystream" not in text
    (tmp_path / "citystream.yaml").write_text(text)
    loaded = load_settings(tmp_path / "citystream.yaml")  # the settings models (extra=forbid) accept it
    writable = [loaded.stack.home, loaded.worker.data_dir, loaded.sink.frames_dir, loaded.gateway.state_dir]
    if loaded.clickhouse.dsn.startswith("chdb://"):
        writable.append(Path(loaded.clickhouse.dsn[len("chdb://"):]))
    for p in writable:
        assert p is not None and p.is_absolute() and str(p).startswith(DATA_DIR), p
    sets = by_kind(docs, "StatefulSet")
    for name, spec in pod_specs(docs).items():
        mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert DATA_DIR in mounts and "/tmp" in mounts, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        claims = {t["metadata"]["name"] for t in sets.get(name, {}).get("spec", {}).get("volumeClaimTemplates", [])}
        for mount in mounts.values():
            vol = volumes.get(mount["name"])
            if mount["name"] in claims:
                continue
            assert vol is not None, f"{name}: {mount['name']} is neither a volume nor a claim"
            if not mount.get("readOnly"):
                assert "emptyDir" in vol, f"{name}: {mount['mountPath']} is writable but not an emptyDir/PVC"


def test_secrets_come_from_existing_secrets_with_checksums() -> None:
    docs = render()
    assert not by_kind(docs, "Secret"), "the chart must not carry secrets"
    for name, d in by_kind(docs, "StatefulSet").items():
        notes = d["spec"]["template"]["metadata"]["annotations"]
        assert len(notes["checksum/config"]) == 64 and len(notes["checksum/secret"]) == 64, name
        container = d["spec"]["template"]["spec"]["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": "citystream-secrets"}}], name
    res = helm("template", "cs", str(CHART), "--kube-version", KUBE_VERSION,
               "--set", "settings.mqtt.password=hunter2", check=False)
    assert res.returncode != 0 and "/settings" in res.stderr, "values.schema.json must refuse secrets in values"
    changed = render(sets=("settings.bridge.max_inflight=10",))
    before = by_kind(docs, "StatefulSet")["cs-bridge"]["spec"]["template"]["metadata"]["annotations"]
    after = by_kind(changed, "StatefulSet")["cs-bridge"]["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] != after["checksum/config"], "a settings change must roll the pods"


def test_production_values_wire_strimzi_clickhouse_and_mqtt_tls() -> None:
    docs = render(CHART / "examples" / "production.yaml")
    settings = yaml.safe_load(by_kind(docs, "ConfigMap")["cs-settings"]["data"]["citystream.yaml"])
    assert settings["kafka"]["security_protocol"] == "SASL_SSL" and settings["kafka"]["replication_factor"] == 3
    assert settings["kafka"]["ssl_ca_location"] == "/etc/citystream/tls/kafka/ca.crt"
    assert settings["mqtt"]["tls"]["ca_file"] == "/etc/citystream/tls/mqtt/ca.crt"
    assert settings["clickhouse"]["dsn"].startswith("https://")
    bridge = by_kind(docs, "StatefulSet")["cs-bridge"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in bridge["containers"][0]["env"]}
    assert env["CITYSTREAM_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    volumes = {v["name"]: v for v in bridge["volumes"]}
    assert volumes["tls-kafka"]["secret"]["secretName"] == "city-kafka-cluster-ca-cert"


def test_embedded_chdb_allows_one_sink_only() -> None:
    res = helm("template", "cs", str(CHART), "--kube-version", KUBE_VERSION,
               "--set", "settings.clickhouse.dsn=chdb://x", "--set", "stages.sink.replicas=2", check=False)
    assert res.returncode != 0 and "stages.sink.replicas must be 1" in res.stderr


def test_pod_disruption_budgets_and_network_policies_cover_every_stage() -> None:
    docs = render()
    pdbs = by_kind(docs, "PodDisruptionBudget")
    policies = by_kind(docs, "NetworkPolicy")
    assert policies["cs-default-deny"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    for stage in STAGES:
        selector = {"app.kubernetes.io/name": "citystream", "app.kubernetes.io/instance": "cs",
                    "app.kubernetes.io/component": stage}
        assert pdbs[f"cs-{stage}"]["spec"]["selector"]["matchLabels"] == selector
        assert pdbs[f"cs-{stage}"]["spec"]["maxUnavailable"] == 1
        policy = policies[f"cs-{stage}"]["spec"]
        assert policy["podSelector"]["matchLabels"] == selector
        assert policy["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
        assert 53 in egress_ports and 9092 in egress_ports, stage
    assert 1883 in {p["port"] for r in policies["cs-bridge"]["spec"]["egress"] for p in r["ports"]}
    assert 8123 in {p["port"] for r in policies["cs-sink"]["spec"]["egress"] for p in r["ports"]}


def test_monitoring_reuses_the_prometheus_rules() -> None:
    docs = render()
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    files = sorted(RULES.glob("*.yml"))
    assert files
    expected = [g for f in files for g in yaml.safe_load(f.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected, "the PrometheusRule must carry deploy/prometheus/rules unchanged"
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    relabel = monitor["spec"]["endpoints"][0]["relabelings"][0]
    assert relabel["targetLabel"] == "job" and relabel["replacement"] == "citystream-$1"  # jobs as in prometheus.yml
    services = by_kind(docs, "Service")
    for stage in STAGES:
        svc = services[f"cs-{stage}-headless"]
        assert svc["metadata"]["labels"]["citystream.io/metrics"] == "true"
        assert svc["spec"]["publishNotReadyAddresses"] is True  # not-ready stages are scraped (their alerts)


def test_sequence_tracking_is_off_with_several_bridges_unless_set() -> None:
    def bridge_settings(*sets: str) -> dict[str, Any]:
        cm = by_kind(render(sets=sets), "ConfigMap")["cs-settings"]
        return dict(yaml.safe_load(cm["data"]["citystream.yaml"]).get("bridge", {}))

    assert bridge_settings()["track_sequences"] is False  # 2 replicas by default
    assert "track_sequences" not in bridge_settings("stages.bridge.replicas=1")
    assert bridge_settings("settings.bridge.track_sequences=true")["track_sequences"] is True


def test_the_console_is_a_deployment_and_service_with_logins_from_the_secret(tmp_path: Path) -> None:
    docs = render(sets=("console.port=8443", "console.service.port=8080"))
    deployment = by_kind(docs, "Deployment")["cs-console"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 1 and container["args"][-1] == "console"
    assert container["image"] == "citystream-console:0.1.0"
    assert container["ports"] == [{"name": "http", "containerPort": 8443, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    # logins and the session key come from the Secret, like every other secret; the values refuse them
    assert container["envFrom"] == [{"secretRef": {"name": "citystream-secrets"}}]
    for key in ("settings.console.session_secret=x", "settings.console.users.a.role=admin"):
        res = helm("template", "cs", str(CHART), "--kube-version", KUBE_VERSION, "--set", key, check=False)
        assert res.returncode != 0 and "/settings" in res.stderr, key
    service = by_kind(docs, "Service")["cs-console"]["spec"]
    assert service["selector"]["app.kubernetes.io/component"] == "console"
    assert service["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    (tmp_path / "citystream.yaml").write_text(by_kind(docs, "ConfigMap")["cs-settings"]["data"]["citystream.yaml"])
    console = load_settings(tmp_path / "citystream.yaml").console
    assert (console.host, console.port) == ("0.0.0.0", 8443)
    policy = by_kind(docs, "NetworkPolicy")["cs-console"]["spec"]
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert {p["port"] for r in policy["egress"] for p in r["ports"]} >= {53, 9092, 8123}


def test_the_console_needs_a_clickhouse_server() -> None:
    res = helm("template", "cs", str(CHART), "--kube-version", KUBE_VERSION,
               "--set", "settings.clickhouse.dsn=chdb://x", check=False)
    assert res.returncode != 0 and "console.enabled needs a ClickHouse server" in res.stderr
    assert "cs-console" not in by_kind(render(CHART / "examples" / "embedded.yaml"), "Deployment")
