"""deploy/chaos-mesh: every manifest uses only fields Chaos Mesh (chaos-mesh.org/v1alpha1,
2.x) documents, with valid enum values and durations, covers the faults the issue asks
for, and selects pods by labels the Helm chart really sets."""

from __future__ import annotations

import re

import helm_python as helm
import pytest
import yaml

from support import CHAOS, CHART

# ----- Chaos Mesh's API (chaos-mesh.org/v1alpha1) -----
# Field sets from the CRDs (config/crd/bases/chaos-mesh.org_*.yaml) and Go types
# (api/v1alpha1/*_types.go) of Chaos Mesh 2.x, and the field descriptions of the
# "Simulate Pod/Network/Stress Faults" and "Define Scheduling Rules" pages of its docs.
# A field is `name` (optional) or `name!` (required); a nested dict is a sub-object, a
# list of one dict is a list of sub-objects, a set is an enum, "duration" a Go duration.

SELECTOR = {
    "namespaces": [str], "nodes": [str], "pods": dict, "nodeSelectors": dict,
    "fieldSelectors": dict, "labelSelectors": dict, "annotationSelectors": dict,
    "podPhaseSelectors": [str],
    "expressionSelectors": [{"key!": str, "operator!": {"In", "NotIn", "Exists", "DoesNotExist"},
                             "values": [str]}],
}
MODES = {"one", "all", "fixed", "fixed-percent", "random-max-percent"}
# PodSelector, inlined into every chaos spec (and NetworkChaos' target).
POD_SELECTOR = {"selector!": SELECTOR, "mode!": MODES, "value": str}

POD_CHAOS = {
    **POD_SELECTOR,
    "action!": {"pod-kill", "pod-failure", "container-kill"},
    "duration": "duration",
    "gracePeriod": int,
    "containerNames": [str],
    "remoteCluster": str,
}
NETWORK_CHAOS = {
    **POD_SELECTOR,
    "action!": {"netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth"},
    "duration": "duration",
    "device": str,
    "direction": {"to", "from", "both"},
    "target": POD_SELECTOR,
    "targetDevice": str,
    "externalTargets": [str],
    "remoteCluster": str,
    "delay": {"latency!": "duration", "correlation": str, "jitter": "duration",
              "reorder": {"reorder!": str, "correlation": str, "gap!": int}},
    "loss": {"loss!": str, "correlation": str},
    "duplicate": {"duplicate!": str, "correlation": str},
    "corrupt": {"corrupt!": str, "correlation": str},
    "bandwidth": {"rate!": str, "limit!": int, "buffer!": int, "peakrate": int, "minburst": int},
    "rate": {"rate!": str},
}
STRESS_CHAOS = {
    **POD_SELECTOR,
    "containerNames": [str],
    "duration": "duration",
    "stressngStressors": str,
    "remoteCluster": str,
    "stressors": {
        "cpu": {"workers!": int, "load": int, "options": [str]},
        "memory": {"workers!": int, "size": str, "options": [str], "oomScoreAdj": int},
    },
}
# TimeChaos and DNSChaos: "Simulate Time Faults" / "Simulate DNS Faults" (api/v1alpha1/
# timechaos_types.go, dnschaos_types.go). DNSChaos patterns may end in one `*` only.
TIME_CHAOS = {
    **POD_SELECTOR,
    "timeOffset!": "offset",
    "clockIds": [{"CLOCK_REALTIME", "CLOCK_MONOTONIC", "CLOCK_PROCESS_CPUTIME_ID",
                  "CLOCK_THREAD_CPUTIME_ID", "CLOCK_MONOTONIC_RAW", "CLOCK_REALTIME_COARSE",
                  "CLOCK_MONOTONIC_COARSE", "CLOCK_BOOTTIME", "CLOCK_REALTIME_ALARM",
                  "CLOCK_BOOTTIME_ALARM"}],
    "containerNames": [str],
    "duration": "duration",
    "remoteCluster": str,
}
DNS_CHAOS = {
    **POD_SELECTOR,
    "action!": {"error", "random"},
    "patterns": ["dns-pattern"],
    "containerNames": [str],
    "duration": "duration",
    "remoteCluster": str,
}
# StatusCheck ("Define Status Check", api/v1alpha1/statuscheck_types.go): no selector.
STATUS_CHECK = {
    "mode": {"Synchronous", "Continuous"},
    "type!": {"HTTP"},
    "duration": "duration",
    "timeoutSeconds": int,
    "intervalSeconds": int,
    "failureThreshold": int,
    "successThreshold": int,
    "recordsHistoryLimit": int,
    "http": {"url!": str, "method": {"GET", "POST"}, "headers": dict, "body": str,
             "criteria!": {"statusCode!": str}},
}
SCHEDULE_TYPES = {"PodChaos": "podChaos", "NetworkChaos": "networkChaos", "StressChaos": "stressChaos"}
SCHEDULE = {
    "schedule!": "cron",
    "startingDeadlineSeconds": int,
    "concurrencyPolicy": {"Forbid", "Allow"},
    "historyLimit": int,
    "type!": set(SCHEDULE_TYPES),
    "podChaos": POD_CHAOS,
    "networkChaos": NETWORK_CHAOS,
    "stressChaos": STRESS_CHAOS,
}
SPECS = {"PodChaos": POD_CHAOS, "NetworkChaos": NETWORK_CHAOS, "StressChaos": STRESS_CHAOS,
         "TimeChaos": TIME_CHAOS, "DNSChaos": DNS_CHAOS, "StatusCheck": STATUS_CHECK, "Schedule": SCHEDULE}

GO_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")
DNS_PATTERN = re.compile(r"[a-zA-Z0-9.?-]+\*?")
CRON_FIELD = re.compile(r"[0-9*/,\-]+")


def check(value, shape, path: str) -> list[str]:
    """Problems of `value` against `shape`, each naming its path."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        fields = {name.rstrip("!"): sub for name, sub in shape.items()}
        problems = [f"{path}.{k}: unknown field" for k in value if k not in fields]
        problems += [f"{path}.{n[:-1]}: required" for n in shape if n.endswith("!") and n[:-1] not in value]
        for key, sub in value.items():
            if key in fields:
                problems += check(sub, fields[key], f"{path}.{key}")
        return problems
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value) for p in check(item, shape[0], f"{path}[{i}]")]
    if isinstance(shape, set):
        return [] if value in shape else [f"{path}: {value!r} not one of {sorted(shape)}"]
    if shape == "duration":
        ok = isinstance(value, str) and GO_DURATION.fullmatch(value)
        return [] if ok else [f"{path}: {value!r} is not a Go duration"]
    if shape == "offset":  # a signed Go duration
        ok = isinstance(value, str) and GO_DURATION.fullmatch(value.removeprefix("-"))
        return [] if ok else [f"{path}: {value!r} is not a Go duration"]
    if shape == "dns-pattern":
        ok = isinstance(value, str) and DNS_PATTERN.fullmatch(value)
        return [] if ok else [f"{path}: {value!r}: only A-Z a-z 0-9 . - ?, and one * at the end"]
    if shape == "cron":
        fields = str(value).split()
        ok = str(value).startswith("@") or (len(fields) == 5 and all(CRON_FIELD.fullmatch(f) for f in fields))
        return [] if ok else [f"{path}: {value!r} is not a cron schedule"]
    if shape is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: expected an integer"]
    if shape is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string"]
    if shape is dict:
        return [] if isinstance(value, dict) else [f"{path}: expected a map"]
    raise AssertionError(f"bad shape at {path}")


def check_manifest(obj: dict) -> list[str]:
    problems = []
    if obj.get("apiVersion") != "chaos-mesh.org/v1alpha1":
        problems.append(f"apiVersion {obj.get('apiVersion')!r}")
    if set(obj) - {"apiVersion", "kind", "metadata", "spec"}:
        problems.append(f"top-level fields {sorted(set(obj))}")
    if obj.get("kind") not in SPECS:
        return problems + [f"kind {obj.get('kind')!r}"]
    spec = obj["spec"]
    problems += check(spec, SPECS[obj["kind"]], "spec")
    if obj["kind"] == "Schedule":
        embedded = SCHEDULE_TYPES.get(spec.get("type"))
        others = set(SCHEDULE_TYPES.values()) - {embedded}
        if embedded not in spec or others & set(spec):
            problems.append(f"spec: a {spec.get('type')} schedule embeds exactly spec.{embedded}")
    for chaos in chaos_specs(obj):
        if chaos.get("action") == "pod-failure" and "duration" not in chaos:
            problems.append("pod-failure needs a duration")
        if chaos.get("mode") in {"fixed", "fixed-percent", "random-max-percent"} and "value" not in chaos:
            problems.append(f"mode {chaos['mode']} needs a value")
        action = chaos.get("action")
        if action in {"delay", "loss", "duplicate", "corrupt", "bandwidth"} and action not in chaos:
            problems.append(f"action {action} needs spec.{action}")
    return problems


def chaos_specs(obj: dict) -> list[dict]:
    """The chaos specs of a manifest: its spec, or the one a Schedule embeds (none for a
    StatusCheck, which injects nothing)."""
    if obj["kind"] == "Schedule":
        return [obj["spec"][key] for key in SCHEDULE_TYPES.values() if key in obj["spec"]]
    if obj["kind"] == "StatusCheck":
        return []
    return [obj["spec"]]


def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(CHAOS.glob("*.yaml")):
        found += [(path.name, obj) for obj in yaml.safe_load_all(path.read_text()) if obj]
    return found


def test_manifests_use_documented_fields():
    found = manifests()
    assert len(found) >= 10
    problems = {f"{file} {obj['metadata']['name']}": check_manifest(obj) for file, obj in found}
    assert {k: v for k, v in problems.items() if v} == {}


def test_checker_refuses_what_chaos_mesh_would():
    """The field check can fail: typos, bad enums, bad durations, missing fields."""
    pod_kill = next(obj for _, obj in manifests() if obj["kind"] == "PodChaos")
    broken = {**pod_kill, "spec": {**pod_kill["spec"], "gracePeriodSeconds": 0, "mode": "some"}}
    assert check_manifest(broken) == ["spec.gracePeriodSeconds: unknown field",
                                      "spec.mode: 'some' not one of "
                                      "['all', 'fixed', 'fixed-percent', 'one', 'random-max-percent']"]
    delay = {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos", "metadata": {"name": "x"},
             "spec": {"action": "delay", "mode": "one", "selector": {"labelSelector": {}},
                      "delay": {"latency": "100 ms"}, "duration": "2 minutes"}}
    assert check_manifest(delay) == ["spec.selector.labelSelector: unknown field",
                                     "spec.delay.latency: '100 ms' is not a Go duration",
                                     "spec.duration: '2 minutes' is not a Go duration"]
    schedule = {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "Schedule", "metadata": {"name": "x"},
                "spec": {"schedule": "every hour", "type": "PodChaos", "networkChaos": {}}}
    problems = check_manifest(schedule)
    assert "spec.schedule: 'every hour' is not a cron schedule" in problems
    assert "spec: a PodChaos schedule embeds exactly spec.podChaos" in problems


def test_the_issue_faults_are_covered():
    faults = set()
    for _, obj in manifests():
        for chaos in chaos_specs(obj):
            kind = obj["spec"]["type"] if obj["kind"] == "Schedule" else obj["kind"]
            if kind == "StressChaos":
                faults |= {f"stress-{s}" for s in chaos["stressors"]}
            elif kind == "TimeChaos":
                faults.add("time-offset")
            elif kind == "DNSChaos":
                faults.add(f"dns-{chaos['action']}")
            else:
                faults.add(chaos["action"])
    assert {"pod-kill", "pod-failure", "delay", "partition", "loss", "bandwidth",
            "stress-cpu", "stress-memory", "time-offset", "dns-error"} <= faults
    assert any(obj["kind"] == "Schedule" for _, obj in manifests())
    assert any(obj["kind"] == "StatusCheck" for _, obj in manifests())


def test_time_chaos_outlives_the_svid_and_dns_chaos_hits_the_peer_names():
    """TimeChaos shifts the node's clock past the chart's default SVID lifetime, so the
    SVID really looks expired; DNSChaos' pattern matches the seed names the chart
    renders; the StatusCheck probes the chart's API Service at its readiness path."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render({}, name="x0tta6bl4", namespace="x0tta6bl4")
    objects = [o for path, text in rendered.items() if path.endswith(".yaml")
               for o in yaml.safe_load_all(text) if o]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    by_kind = {obj["kind"]: obj for _, obj in manifests() if obj["kind"] in {"TimeChaos", "DNSChaos", "StatusCheck"}}
    hours = {"h": 3600, "m": 60, "s": 1}

    def seconds(duration: str) -> int:
        return sum(int(n) * hours[u] for n, u in re.findall(r"(\d+)([hms])", duration))

    assert seconds(by_kind["TimeChaos"]["spec"]["timeOffset"]) > seconds(values["identity"]["ttl"])
    assert by_kind["TimeChaos"]["spec"]["containerNames"] == ["node"]
    toml = next(o for o in objects if o["kind"] == "ConfigMap")["data"]["node.toml"]
    seeds = re.findall(r'"([^":]+):\d+"', toml.split("peers = ", 1)[1].split("\n", 1)[0])
    assert seeds
    for pattern in by_kind["DNSChaos"]["spec"]["patterns"]:
        regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
        assert all(re.match(regex, seed) for seed in seeds), (pattern, seeds)
    api = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-api"))
    url = by_kind["StatusCheck"]["spec"]["http"]["url"]
    port = api["spec"]["ports"][0]["port"]
    assert url == f"http://{api['metadata']['name']}.x0tta6bl4.svc:{port}/health/ready", url


def selectors(obj: dict) -> list[dict]:
    found = []
    for chaos in chaos_specs(obj):
        found.append(chaos["selector"])
        if "target" in chaos:
            found.append(chaos["target"]["selector"])
    return found


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_selectors_match_the_chart_pods(kind):
    """Rendered as release x0tta6bl4 in namespace x0tta6bl4 (deploy/chaos-mesh/README.md),
    the chart's node pods carry every label the experiments select on; the Services and
    other objects' pods do not exist, so only node pods can match."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render({"kind": kind}, name="x0tta6bl4", namespace="x0tta6bl4")
    objects = [o for path, text in rendered.items() if path.endswith(".yaml")
               for o in yaml.safe_load_all(text) if o]
    workload = next(o for o in objects if o["kind"] == kind)
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    namespace = workload["metadata"]["namespace"]
    for file, obj in manifests():
        assert obj["metadata"]["namespace"] == namespace, file
        if obj["kind"] == "StatusCheck":
            assert f".{namespace}.svc:" in obj["spec"]["http"]["url"], file
        for selector in selectors(obj):
            assert selector["namespaces"] == [namespace], file
            labels = selector["labelSelectors"]
            assert labels and labels.items() <= pod_labels.items(), (file, labels, pod_labels)
            assert labels.get("app.kubernetes.io/component") == "node", file
        for chaos in chaos_specs(obj):
            for container in chaos.get("containerNames", []):
                names = {c["name"] for c in workload["spec"]["template"]["spec"]["containers"]}
                assert container in names, (file, container)
