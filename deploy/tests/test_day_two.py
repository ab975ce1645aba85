"""Day two on Kubernetes (issue 19): each defect reproduced with what the chart renders
(its ConfigMap, probes, ServiceMonitor, PodDisruptionBudget, init and node containers'
command lines) run as real node processes, and the fix checked the same way."""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.request

import helm_python as helm
import pytest

from support import CHART, Node, eventually, free_port, make_ca, run
from test_helm import one, one_container, render, write_config


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def kubelet_get(url: str, timeout: float = 3) -> int:
    """Status of a GET as the kubelet's httpGet probe (and a Prometheus with
    insecureSkipVerify) makes it: https without verifying the server and without a client
    certificate; http in the clear. A failed connection or handshake is status 0."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return 0


def loopback_values(tmp_path, api_port: int, **node) -> dict:
    return {"replicas": 1, "ports": {"mesh": free_port(), "api": api_port},
            "node": {"listenAddress": "127.0.0.1", "apiListenAddress": "127.0.0.1",
                     "identityDir": str(tmp_path / "svid"), **node}}


def issue_as_the_init_container(pod: dict, ca, name: str) -> None:
    args = [arg.replace("/var/run/x0tta6bl4/ca", str(ca)).replace("$(X0TTA6BL4_NODE_NAME)", name)
            for arg in one_container(pod, "issue-svid", init=True)["args"]]
    run(*args)


def probe_url(container: dict, probe: str, port: int) -> str:
    get = container[probe]["httpGet"]
    return f"{get.get('scheme', 'HTTP').lower()}://127.0.0.1:{port}{get['path']}"


# ----- item 4: apiMtls puts every pod in CrashLoopBackOff -----

def test_api_mtls_probes_and_scrape_reach_the_node(chart, tmp_path):
    """With node.apiMtls the API speaks TLS: probes as rendered (HTTPS) and the
    ServiceMonitor's scrape (https, no verification, no client SVID) reach a node run with
    the rendered config. Before the fix the probes were plain HTTP against the TLS port:
    the kubelet got no answer and restarted the pod for ever (checked below)."""
    ca = make_ca(tmp_path, [])
    api_port = free_port()
    objects = render(chart, {**loopback_values(tmp_path, api_port, apiMtls=True, apiOpen=True)})
    pod = one(objects, "StatefulSet")["spec"]["template"]
    issue_as_the_init_container(pod, ca, "x0tta6bl4-0")
    node = Node(tmp_path, ca, "x0tta6bl4-0")
    write_config(objects, node.config)
    node.api_port = api_port
    container = one_container(pod, "node")
    live, ready = (probe_url(container, p, api_port) for p in ("livenessProbe", "readinessProbe"))
    assert live.startswith("https://") and ready.startswith("https://")
    endpoint = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    node.start()
    try:
        eventually("the readiness probe to pass", lambda: kubelet_get(ready) == 200, 15)
        assert kubelet_get(live) == 200
        metrics = f"{endpoint['scheme']}://127.0.0.1:{api_port}{endpoint['path']}"
        assert kubelet_get(metrics) == 200
        # The defect: the same probe in plain HTTP gets no HTTP answer from a TLS port.
        assert kubelet_get(live.replace("https://", "http://")) != 200
        # And the rest of the API still wants an SVID.
        assert kubelet_get(f"https://127.0.0.1:{api_port}/api/v1/status") != 200
    finally:
        node.stop()


def test_api_mtls_without_open_health_is_refused_at_install(chart):
    with pytest.raises(Exception, match="node.apiOpen"):
        render(chart, {"node": {"apiMtls": True, "apiOpen": False}})
    plain = one(render(chart, {}), "StatefulSet")["spec"]["template"]
    assert "scheme" not in one_container(plain, "node")["livenessProbe"]["httpGet"]


# ----- item 1: a broken mesh must not block drains -----

def test_pdb_lets_drains_evict_unready_pods(chart):
    pdb = one(render(chart, {}), "PodDisruptionBudget")
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["spec"]["maxUnavailable"] == 1
