"""The twin-study chart (deploy/helm/x0tta6bl4-twin-study): it renders with Helm's own
renderer (PyPI helm-python-sdk) and lints clean, its objects are valid against the
Kubernetes schemas (PyPI kubernetes-validate) and meet the restricted Pod Security
Standard, the Indexed Job's completion index reaches `--shard`, the merge reads exactly
the parts the shards write, and the rendered command lines, run with the real binary,
give the report of the unsharded run."""

from __future__ import annotations

import json
import re
import subprocess

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from support import DEPLOY, binary, run

STUDY_CHART = DEPLOY / "helm" / "x0tta6bl4-twin-study"
KUBERNETES_VERSION = "1.30"
RELEASE = "ff-study"
NAMESPACE = "twin"
INDEX = "$(JOB_COMPLETION_INDEX)"

SMALL = {"topology": "grid", "nodes": 16, "scenario": "node-failure", "iterations": 6,
         "seed": 5, "flows": 100, "probeIntervalMs": 50, "probeMisses": 3, "start": "cold"}

VARIANTS = {
    "defaults": {},
    "existing-claim": {"storage": {"existingClaim": "nfs-studies", "accessMode": "ReadWriteMany",
                                   "size": "1Gi"},
                       "ttlSecondsAfterFinished": 3600, "nodeSelector": {"pool": "batch"},
                       "imagePullSecrets": [{"name": "registry"}]},
    "small": {"study": SMALL, "shards": 3, "parallelism": 3, "threadsPerShard": 2,
              "storage": {"storageClassName": "nfs", "accessMode": "ReadWriteMany", "size": "1Gi"}},
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(STUDY_CHART) as loaded:
        yield loaded


def render(chart, values: dict) -> list[dict]:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            objects.extend(o for o in yaml.safe_load_all(text) if o)
    return objects


def job(objects: list[dict], suffix: str) -> dict:
    found = [o for o in objects if o["kind"] == "Job" and o["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, [o["metadata"]["name"] for o in objects]
    return found[0]


def container(job_object: dict) -> dict:
    containers = job_object["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_lint_is_clean():
    report = helm.lint(STUDY_CHART, {}, strict=True, kube_version=f"v{KUBERNETES_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_objects_are_valid_kubernetes(chart, variant):
    objects = render(chart, VARIANTS[variant])
    kinds = sorted(o["kind"] for o in objects)
    claim = "existingClaim" not in VARIANTS[variant].get("storage", {})
    assert kinds == ["Job", "Job"] + (["PersistentVolumeClaim"] if claim else [])
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# The restricted Pod Security Standard (kubernetes.io/docs/concepts/security/
# pod-security-standards/, "Restricted"), as the admission controller checks it.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def check_restricted(pod: dict) -> None:
    spec = pod["spec"]
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host), host
    pod_security = spec.get("securityContext", {})
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, volume
    for c in spec.get("initContainers", []) + spec["containers"]:
        security = c.get("securityContext", {})
        assert not security.get("privileged"), c["name"]
        assert security.get("allowPrivilegeEscalation") is False, c["name"]
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, c["name"]
        assert security.get("runAsUser", pod_security.get("runAsUser", 1)) != 0, c["name"]
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {}))
        assert seccomp.get("type") in {"RuntimeDefault", "Localhost"}, c["name"]
        capabilities = security.get("capabilities", {})
        assert "ALL" in capabilities.get("drop", []), c["name"]
        assert set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"}, c["name"]
        assert all("hostPort" not in p for p in c.get("ports", [])), c["name"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pods_meet_the_restricted_pod_security_standard(chart, variant):
    for obj in render(chart, VARIANTS[variant]):
        if obj["kind"] == "Job":
            check_restricted(obj["spec"]["template"])
            assert obj["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_completion_index_is_the_shard_and_the_merge_reads_every_part(chart):
    objects = render(chart, VARIANTS["small"])
    shards, merge = job(objects, "-shards"), job(objects, "-merge")
    spec = shards["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 3 and spec["parallelism"] == 3
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    shard = container(shards)
    env = {e["name"]: e for e in shard["env"]}
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    args = shard["args"]
    assert args[:2] == ["twin", "run"]
    assert args[args.index("--shard") + 1] == f"{INDEX}/3"
    out = args[args.index("--out") + 1]
    assert re.fullmatch(rf"/study/{RELEASE}-[0-9a-f]{{10}}/part-{re.escape(INDEX)}\.json", out), out
    assert args[args.index("--threads") + 1] == "2"
    written = {out.replace(INDEX, str(i)) for i in range(3)}
    margs = container(merge)["args"]
    assert margs[:2] == ["twin", "merge"]
    assert {a for a in margs if a.endswith(".json") and "/part-" in a} == written
    # Both pods mount the same claim where the paths say.
    for obj in (shards, merge):
        pod = obj["spec"]["template"]["spec"]
        claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert claim == next(o for o in objects if o["kind"] == "PersistentVolumeClaim")["metadata"]["name"]
        assert container(obj)["volumeMounts"] == [{"name": "study", "mountPath": "/study"}]
    # Deterministic failures end the Job instead of retrying; disruptions do not count.
    for obj, name in ((shards, "shard"), (merge, "merge")):
        rules = obj["spec"]["podFailurePolicy"]["rules"]
        assert rules[0]["action"] == "FailJob"
        assert rules[0]["onExitCodes"] == {"containerName": name, "operator": "In", "values": [1, 2]}
        assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


@pytest.mark.parametrize("values, field", [
    ({"shards": 0}, "/shards"),
    ({"shards": "four"}, "/shards"),
    ({"bogus": 1}, "bogus"),
    ({"study": {**SMALL, "start": "warm"}}, "/study/start"),
    ({"study": {**SMALL, "iterations": 0}}, "/study/iterations"),
    ({"study": {**SMALL, "topology": "node:http://10.0.0.1:8001"}}, "/study/topology"),
    ({"study": {**SMALL, "probeMisses": 1}}, "/study/probeMisses"),
    ({"storage": {"accessMode": "ReadWriteSometimes", "size": "1Gi"}}, "/storage/accessMode"),
    ({"merge": {"waitSeconds": 0}}, "/merge/waitSeconds"),
])
def test_values_outside_the_schema_are_refused_naming_the_field(chart, values, field):
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert field in str(refused.value)


def study_dir(chart, values: dict) -> str:
    args = container(job(render(chart, values), "-shards"))["args"]
    return args[args.index("--out") + 1].rsplit("/", 1)[0]


def test_another_study_under_the_same_name_writes_elsewhere(chart):
    """A release name reused on a kept claim never mixes two studies' parts; the same
    study finds its parts again (they are the same, the twin being deterministic)."""
    small = VARIANTS["small"]
    assert study_dir(chart, small) == study_dir(chart, dict(small))
    for change in ({"study": {**SMALL, "seed": 6}}, {"shards": 2},
                   {"image": {"repository": "x0tta6bl4", "tag": "0.2.0", "pullPolicy": "IfNotPresent"}}):
        assert study_dir(chart, {**small, **change}) != study_dir(chart, small), change
    merge_args = container(job(render(chart, small), "-merge"))["args"]
    assert all(a.startswith(study_dir(chart, small) + "/") for a in merge_args if a.startswith("/study/"))


def test_more_shards_than_iterations_is_refused(chart):
    with pytest.raises(helm.HelmError) as refused:
        chart.render({"study": SMALL, "shards": 7}, name=RELEASE, namespace=NAMESPACE)
    assert "shards (7) exceeds study.iterations (6)" in str(refused.value)


def local(arg: str, study_dir, index: int | None = None) -> str:
    """A rendered argument as it runs here: the volume's mount point replaced by a
    directory, the completion index by the shard's."""
    arg = arg.replace("/study/", f"{study_dir}/")
    return arg if index is None else arg.replace(INDEX, str(index))


def test_rendered_jobs_run_the_study_and_merge_to_the_unsharded_report(chart, tmp_path):
    """Run the rendered shard command once per completion index and the rendered merge
    command, with the real binary: the merge succeeds and its report.json is the
    unsharded `twin run --json` (wall-clock figures aside); its CSV the unsharded CSV."""
    objects = render(chart, VARIANTS["small"])
    shard_args = container(job(objects, "-shards"))["args"]
    merge_args = container(job(objects, "-merge"))["args"]
    # The merge starts first and waits for the parts, as in the cluster.
    merging = subprocess.Popen([str(binary()), *(local(a, tmp_path) for a in merge_args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for index in range(3):
            result = run(*(local(a, tmp_path, index) for a in shard_args))
            assert f"shard {index}/3" in result.stdout
        stdout, stderr = merging.communicate(timeout=60)
    finally:
        merging.kill()
    assert merging.returncode == 0, stderr
    assert "MTTR" in stdout
    out = shard_args[shard_args.index("--out") + 1]
    study = tmp_path / out.split("/")[2]
    report = json.loads((study / "report.json").read_text())
    flags = shard_args[2:shard_args.index("--threads")]
    whole_csv = tmp_path / "whole.csv"
    whole = json.loads(run("twin", "run", *flags, "--json", "--csv", whole_csv).stdout)
    for volatile in ("wall_seconds", "sim_seconds_per_wall_second"):
        assert report.pop(volatile) > 0 and whole.pop(volatile) > 0
    assert report == whole
    assert report["iterations"] == SMALL["iterations"] and report["mttr_ms"]["samples"] > 0
    assert (study / "samples.csv").read_text() == whole_csv.read_text()
    assert re.search(r"^x0tta6bl4_twin_mttr_seconds\{", (study / "twin.prom").read_text(), re.M)
