"""The Helm chart renders (Helm's own renderer, from PyPI helm-python-sdk), lints, yields
objects valid against the Kubernetes schemas (PyPI kubernetes-validate), refuses values
outside values.schema.json naming the field, and renders a node configuration that the
node's own loader accepts and runs with."""

from __future__ import annotations

import json
import re
import tomllib

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from support import CHART, ROOT, Node, eventually, free_port, http, make_ca, run

KUBERNETES_VERSION = "1.30"
RELEASE = "x0tta6bl4"
NAMESPACE = "x0tta6bl4"

VARIANTS = {
    "defaults": {},
    "daemonset": {"kind": "DaemonSet", "hostNetwork": True,
                  "node": {"discovery": {"enabled": True, "broadcast": "10.0.0.255"}},
                  "identity": {"spire": {"enabled": True}},
                  "networkPolicy": {"meshFromCIDRs": ["10.0.0.0/24"]}},
    "join-token": {"identity": {"source": "joinToken",
                                "joinToken": {"caServer": "ca.example.org:8443", "tokens": {"x0tta6bl4-0": "s3cret"}},
                                "spire": {"enabled": True, "csiDriver": "csi.spiffe.io"}},
                   "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                   "replicas": 5, "node": {"seedPeers": 2, "peers": ["203.0.113.7:7001"]}},
    "spire": {"identity": {"source": "spire", "spire": {"enabled": True}}},
    "federation": {"node": {"federation": {
        "partner.example": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}}},
    "api-mtls": {"node": {"apiMtls": True}, "serviceMonitor": {"enabled": True}},
    "predictor": {"node": {"predictor": "{\"format\": \"x0tta6bl4-link-predictor/1\"}\n"}},
    "minimal": {"replicas": 1, "serviceMonitor": {"enabled": False},
                "podDisruptionBudget": {"enabled": False}, "networkPolicy": {"enabled": False}},
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values: dict, name: str = RELEASE, namespace: str = NAMESPACE) -> list[dict]:
    """Rendered objects (NOTES.txt and empty documents left out)."""
    manifests = chart.render(values, name=name, namespace=namespace)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            objects.extend(o for o in yaml.safe_load_all(text) if o)
    return objects


def one(objects: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def node_toml(objects: list[dict]) -> str:
    return one(objects, "ConfigMap")["data"]["node.toml"]


def write_config(objects: list[dict], path) -> None:
    """Write the ConfigMap's files as the pod sees them: node.toml at `path`, the policy
    it names beside it."""
    data = one(objects, "ConfigMap")["data"]
    path.write_text(data["node.toml"])
    (path.parent / "policy.toml").write_text(data["policy.toml"])


def flat_keys(table: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in table.items():
        if isinstance(value, dict):
            keys |= flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


EXAMPLE = tomllib.loads((ROOT / "examples" / "node.toml").read_text())


def test_lint_is_clean():
    report = helm.lint(CHART, {}, strict=True, kube_version=f"v{KUBERNETES_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_objects_are_valid_kubernetes(chart, variant):
    objects = render(chart, VARIANTS[variant])
    kinds = {o["kind"] for o in objects}
    assert {"ConfigMap", "Service"} <= kinds
    assert VARIANTS[variant].get("kind", "StatefulSet") in kinds
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            check_service_monitor(obj)
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# ServiceMonitor is a Prometheus Operator CRD, not in the Kubernetes schemas: the fields
# this chart uses, from the operator's API reference (monitoring.coreos.com/v1).
SERVICE_MONITOR_SPEC = {"jobLabel", "namespaceSelector", "selector", "endpoints"}
SERVICE_MONITOR_ENDPOINT = {"port", "path", "scheme", "tlsConfig", "relabelings", "interval",
                            "scrapeTimeout"}


def check_service_monitor(obj: dict) -> None:
    assert obj["kind"] == "ServiceMonitor"
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(obj["spec"]) <= SERVICE_MONITOR_SPEC
    assert set(obj["spec"]["selector"]) <= {"matchLabels", "matchExpressions"}
    for endpoint in obj["spec"]["endpoints"]:
        assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT
        assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint["interval"])


def test_without_the_prometheus_operator_no_service_monitor_is_rendered(chart):
    """Issue #19 item 6: `helm install` failed on a cluster without the Prometheus
    Operator (no ServiceMonitor kind). By default (auto) the chart renders it only where
    the API monitoring.coreos.com/v1 exists; helm-python-sdk renders offline with Helm's
    default capabilities, which are those of a cluster without the operator. true forces
    it (for `helm template` without a cluster), false never renders it."""
    assert render(chart, {}) and not [o for o in render(chart, {}) if o["kind"] == "ServiceMonitor"]
    assert chart.values["serviceMonitor"]["enabled"] == "auto"
    assert one(render(chart, {"serviceMonitor": {"enabled": True}}), "ServiceMonitor")
    assert not [o for o in render(chart, {"serviceMonitor": {"enabled": False}})
                if o["kind"] == "ServiceMonitor"]
    with pytest.raises(helm.HelmError, match="enabled"):
        render(chart, {"serviceMonitor": {"enabled": "yes"}})


def test_service_monitor_labels_each_release_as_its_own_mesh(chart):
    """Issue #19 item 8: the target label `mesh` comes from the api Service's
    app.kubernetes.io/instance label, which differs between two releases in one
    namespace (the rules group by it; x0tta6bl4-rules.test.yml "two meshes")."""
    meshes = set()
    for release in ("blue", "green"):
        objects = render(chart, {"serviceMonitor": {"enabled": True}}, name=release)
        monitor = one(objects, "ServiceMonitor")
        api = one(objects, "Service", "-api")
        [relabel] = monitor["spec"]["endpoints"][0]["relabelings"]
        assert relabel["targetLabel"] == "mesh"
        [source] = relabel["sourceLabels"]
        prefix = "__meta_kubernetes_service_label_"
        assert source.startswith(prefix)
        label = next(k for k in api["metadata"]["labels"]
                     if re.sub(r"[^a-zA-Z0-9_]", "_", k) == source[len(prefix):])
        meshes.add(api["metadata"]["labels"][label])
        assert monitor["spec"]["selector"]["matchLabels"].items() <= api["metadata"]["labels"].items()
    assert meshes == {"blue", "green"}
    rules = (ROOT / "deploy" / "monitoring" / "prometheus" / "x0tta6bl4-rules.yml").read_text()
    assert "by (namespace, job)" not in rules and "on (namespace, job)" not in rules
    assert rules.count("namespace, job, mesh") >= 8


def test_probe_flows_are_rendered_into_the_node_config(chart, tmp_path):
    """Issue #19 item 9: by default every pod sends probe flows to the seed pods from
    its start (the MTTR rules' data), plus node.flows.targets; the node accepts it."""
    flows = tomllib.loads(node_toml(render(chart, {"replicas": 5})))["flows"]
    assert flows == {"targets": ["x0tta6bl4-0", "x0tta6bl4-1", "x0tta6bl4-2"], "interval_ms": 100}
    values = {"node": {"flows": {"toSeeds": False, "targets": ["edge-1"], "intervalMs": 20}}}
    flows = tomllib.loads(node_toml(render(chart, values)))["flows"]
    assert flows == {"targets": ["edge-1"], "interval_ms": 20}
    flows = tomllib.loads(node_toml(render(chart, VARIANTS["daemonset"])))["flows"]
    assert flows["targets"] == []
    config = tmp_path / "node.toml"
    write_config(render(chart, {"replicas": 5}), config)
    assert run("node", "--config", config, "--check-config").stdout.strip() == "ok"
    with pytest.raises(helm.HelmError, match="intervalMs"):
        render(chart, {"node": {"flows": {"intervalMs": 0}}})


def test_service_monitor_scrapes_the_api_service_as_job_x0tta6bl4(chart):
    objects = render(chart, {"serviceMonitor": {"enabled": True}})
    monitor = one(objects, "ServiceMonitor")
    api, mesh = one(objects, "Service", "-api"), one(objects, "Service", "-mesh")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= api["metadata"]["labels"].items()
    assert not selector.items() <= mesh["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in api["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # deploy/monitoring's rules select job="x0tta6bl4".
    assert api["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "x0tta6bl4"
    rules = (ROOT / "deploy" / "monitoring" / "prometheus" / "x0tta6bl4-rules.yml").read_text()
    assert 'job="x0tta6bl4"' in rules


def test_workload_probes_ports_and_selectors(chart):
    for variant in ("defaults", "daemonset"):
        objects = render(chart, VARIANTS[variant])
        workload = one(objects, VARIANTS[variant].get("kind", "StatefulSet"))
        pod = workload["spec"]["template"]
        container = one_container(pod, "node")
        ports = {p["name"]: p for p in container["ports"]}
        assert ports["mesh"]["protocol"] == "UDP" and ports["mesh"]["containerPort"] == 7001
        assert ports["api"]["protocol"] == "TCP" and ports["api"]["containerPort"] == 8001
        assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "api"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "api"}
        labels = pod["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
            for obj in (o for o in objects if o["kind"] == kind):
                selector = obj["spec"].get("selector") or obj["spec"]["podSelector"]
                selector = selector.get("matchLabels", selector)
                assert selector.items() <= labels.items(), obj["metadata"]["name"]
        security = pod["spec"]["securityContext"]
        assert security["runAsNonRoot"] and security["runAsUser"] != 0
    statefulset = one(render(chart, {}), "StatefulSet")
    assert statefulset["spec"]["serviceName"].endswith("-mesh")
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"


def one_container(pod: dict, name: str, init: bool = False) -> dict:
    containers = pod["spec"]["initContainers" if init else "containers"]
    return next(c for c in containers if c["name"] == name)


def test_node_toml_has_exactly_the_documented_keys(chart, tmp_path):
    """With every [protocol] key of examples/node.toml given (at its documented value),
    the rendered file has exactly the keys examples/node.toml documents, with the same
    values, and the node's loader accepts it."""
    assert set(schema_protocol_keys()) == flat_keys(EXAMPLE["protocol"]), \
        "values.schema.json node.protocol differs from examples/node.toml [protocol]"
    values = {"node": {"protocol": EXAMPLE["protocol"], "peers": ["10.1.2.3:7001"],
                       "discovery": EXAMPLE["discovery"], "api": EXAMPLE["api"],
                       "standalone": True}}
    text = node_toml(render(chart, values))
    rendered = tomllib.loads(text)
    # ca_server (renewal at the pod's CA service) is documented commented out.
    assert flat_keys(rendered) - {"identity.ca_server"} == flat_keys(EXAMPLE)
    assert "# ca_server = " in (ROOT / "examples" / "node.toml").read_text()
    assert rendered["protocol"] == EXAMPLE["protocol"]
    assert rendered["discovery"] == EXAMPLE["discovery"]
    assert rendered["api"] == EXAMPLE["api"]
    config = tmp_path / "node.toml"
    write_config(render(chart, values), config)
    assert run("node", "--config", config, "--check-config").stdout.strip() == "ok"


def schema_protocol_keys() -> list[str]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    protocol = schema["properties"]["node"]["properties"]["protocol"]["properties"]
    keys = [k for k in protocol if k != "healing"]
    keys += [f"healing.{k}" for k in protocol["healing"]["properties"]]
    return keys


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_node_loader_accepts_every_variant(chart, variant, tmp_path):
    config = tmp_path / "node.toml"
    write_config(render(chart, VARIANTS[variant]), config)  # --check-config reads the policy
    assert run("node", "--config", config, "--check-config").stdout.strip() == "ok"


def test_rendered_config_runs_a_node(chart, tmp_path):
    """The rendered file, with loopback addresses and a real SVID, starts a node whose
    probes answer; the init container's `ca issue` command line issues that SVID."""
    ca = make_ca(tmp_path, [])
    api_port = free_port()
    objects = render(chart, {"replicas": 1, "ports": {"mesh": free_port(), "api": api_port, "probe": free_port()},
                             "node": {"listenAddress": "127.0.0.1", "apiListenAddress": "127.0.0.1",
                                      "identityDir": str(tmp_path / "svid")}})
    pod = one(objects, "StatefulSet")["spec"]["template"]
    issue = one_container(pod, "issue-svid", init=True)["args"]
    args = [arg.replace("/var/run/x0tta6bl4/ca", str(ca)).replace("$(X0TTA6BL4_NODE_NAME)", "x0tta6bl4-0")
            for arg in issue]
    run(*args)
    assert {p.name for p in (tmp_path / "svid").iterdir()} == {"svid.pem", "svid_key.pem", "bundle.pem"}

    node = Node(tmp_path, ca, "x0tta6bl4-0")
    write_config(objects, node.config)
    container = one_container(pod, "node")
    assert container["args"][:3] == ["node", "--config", "/etc/x0tta6bl4/node.toml"]
    node.api_port = api_port
    node.start()
    try:
        eventually("/health/ready", lambda: http(node.api + "/health/ready")[0] == 200, 10)
        assert http(node.api + "/health/live")[0] == 200
        assert node.get("/api/v1/status")["name"] == "x0tta6bl4-0"
    finally:
        node.stop()


@pytest.mark.parametrize("values, field", [
    ({"replicas": "three"}, "/replicas"),
    ({"kind": "Deployment"}, "/kind"),
    ({"bogus": 1}, "bogus"),
    ({"ports": {"mesh": 70000}}, "/ports/mesh"),
    ({"node": {"protocol": {"probe_interval_ms": 1}}}, "/node/protocol/probe_interval_ms"),
    ({"node": {"protocol": {"probe_intervall_ms": 50}}}, "probe_intervall_ms"),
    ({"node": {"protocol": {"healing": {"degraded_loss": 1.5}}}}, "/node/protocol/healing/degraded_loss"),
    ({"node": {"peers": ["nowhere"]}}, "/node/peers/0"),
    ({"identity": {"source": "joinToken"}}, "/identity/joinToken/caServer"),
    ({"identity": {"ttl": "one day"}}, "/identity/ttl"),
    ({"identity": {"source": "spire"}}, "/identity/spire/enabled"),
    ({"node": {"federation": {"Partner": "-----BEGIN CERTIFICATE-----"}}}, "Partner"),
    ({"node": {"federation": {"partner.example": "not pem"}}}, "/node/federation/partner.example"),
])
def test_values_outside_the_schema_are_refused_naming_the_field(chart, values, field):
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert field in str(refused.value)


def test_spire_source_runs_the_node_in_workload_api_mode(chart):
    """identity.source spire: no init container and no CA or token volume; the node's
    config says source = "workload-api", finds the SPIRE socket through
    SPIFFE_ENDPOINT_SOCKET and may write its state directory."""
    objects = render(chart, VARIANTS["spire"])
    pod = one(objects, "StatefulSet")["spec"]["template"]
    assert "initContainers" not in pod["spec"]
    volumes = {v["name"] for v in pod["spec"]["volumes"]}
    assert "ca" not in volumes and "join-token" not in volumes
    config = tomllib.loads(node_toml(objects))
    assert config["identity"]["source"] == "workload-api"
    container = one_container(pod, "node")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SPIFFE_ENDPOINT_SOCKET"].startswith("unix:///run/spire/sockets/")
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["identity"]["readOnly"] is False


def test_federated_bundles_are_files_beside_the_config(chart):
    """Every file node.toml names (policy, federated bundles) is projected into the
    config volume from the ConfigMap."""
    objects = render(chart, VARIANTS["federation"])
    config = tomllib.loads(node_toml(objects))
    assert config["identity"]["source"] == "files"
    assert config["identity"]["federation"] == {"partner.example": "federation-partner.example.pem"}
    pod = one(objects, "StatefulSet")["spec"]["template"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "config")
    projected = {item["path"] for item in volume["configMap"]["items"]}
    data = one(objects, "ConfigMap")["data"]
    assert projected == {"node.toml", config["identity"]["policy"], "federation-partner.example.pem"}
    assert projected <= set(data)
    assert data["federation-partner.example.pem"].startswith("-----BEGIN CERTIFICATE-----")


def test_join_token_needs_a_token(chart):
    with pytest.raises(helm.HelmError) as refused:
        chart.render({"identity": {"source": "joinToken", "joinToken": {"caServer": "ca:1"}}},
                     name=RELEASE, namespace=NAMESPACE)
    assert "identity.joinToken.tokens" in str(refused.value)


def test_node_refuses_what_the_schema_cannot_see(chart, tmp_path):
    """Cross-key rules stay with the node's loader: it exits 2 naming the key."""
    values = {"node": {"protocol": {"lsa_refresh_ms": 60000, "lsa_lifetime_ms": 90000}}}
    config = tmp_path / "node.toml"
    write_config(render(chart, values), config)
    result = run("node", "--config", config, "--check-config", check=False)
    assert result.returncode == 2
    assert "protocol.lsa_lifetime_ms" in result.stderr


def test_release_name_and_namespace_flow_into_peers(chart):
    objects = render(chart, {"replicas": 2}, name="edge", namespace="mesh-prod")
    peers = tomllib.loads(node_toml(objects))["peers"]
    assert peers == [f"edge-x0tta6bl4-{i}.edge-x0tta6bl4-mesh.mesh-prod.svc.cluster.local:7001" for i in (0, 1)]
    assert one(objects, "StatefulSet")["metadata"]["name"] == "edge-x0tta6bl4"


def test_pods_spread_over_nodes_and_zones_by_default(chart):
    """Issue 19, item 10: anti-affinity and topology spread by default (soft, so small
    clusters still schedule); `affinity` replaces the default; a DaemonSet has neither."""
    pod = one(render(chart, {}), "StatefulSet")["spec"]["template"]
    selector = one(render(chart, {}), "StatefulSet")["spec"]["selector"]["matchLabels"]
    preferred = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname",
                                               "labelSelector": {"matchLabels": selector}}
    spread = pod["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" and c["labelSelector"]["matchLabels"] == selector
               for c in spread)
    hard = one(render(chart, {"podAntiAffinity": "hard"}), "StatefulSet")["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in hard["affinity"]["podAntiAffinity"]
    custom = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "mesh", "operator": "Exists"}]}]}}}
    assert one(render(chart, {"affinity": custom}), "StatefulSet")["spec"]["template"]["spec"]["affinity"] == custom
    none = one(render(chart, {"podAntiAffinity": "none", "topologySpread": {"enabled": False}}),
               "StatefulSet")["spec"]["template"]["spec"]
    assert "affinity" not in none and "topologySpreadConstraints" not in none
    daemon = one(render(chart, {"kind": "DaemonSet"}), "DaemonSet")["spec"]["template"]["spec"]
    assert "affinity" not in daemon and "topologySpreadConstraints" not in daemon
    with pytest.raises(Exception, match="podAntiAffinity"):
        render(chart, {"podAntiAffinity": "always"})
