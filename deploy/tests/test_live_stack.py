"""A real Prometheus (loopback only, temporary directory, 1 s scrape and evaluation
intervals) loads deploy/monitoring/prometheus/x0tta6bl4-rules.yml and scrapes a real
4-node mesh plus a textfile of `x0tta6bl4 twin run --metrics-out` (as node_exporter's
textfile collector would serve it). Every dashboard and rule query must run; killing a
node must fire X0tta6bl4NodeDown and give the MTTR recording rules a value."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support import (
    Mesh,
    Prometheus,
    dashboard_expressions,
    dashboards,
    eventually,
    http,
    rule_expressions,
    run,
)

# Square a-b-d-c-a: every node has two disjoint paths to the opposite corner.
NAMES = ["a", "b", "c", "d"]
LINKS = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]


def scrape_configs(mesh: Mesh, textfile_port: int) -> list[dict]:
    return [
        {"job_name": "x0tta6bl4",
         "static_configs": [{"targets": [n.api.removeprefix("http://") for n in mesh.nodes.values()]}]},
        {"job_name": "twin-textfile",
         "static_configs": [{"targets": [f"127.0.0.1:{textfile_port}"]}]},
    ]


def serve_file(path: Path) -> tuple[ThreadingHTTPServer, int]:
    """Serve `path` at /metrics on loopback, as node_exporter's textfile collector would."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stack")
    twin = directory / "twin.prom"
    run("twin", "run", "--nodes", "16", "--iterations", "2", "--metrics-out", twin, "--json")
    server, textfile_port = serve_file(twin)
    mesh = Mesh(directory, NAMES, LINKS).start()
    prometheus = Prometheus(directory, scrape_configs(mesh, textfile_port))
    try:
        mesh.wait_converged()
        prometheus.start()
        eventually("Prometheus to scrape all 4 nodes",
                   lambda: prometheus.value('x0tta6bl4:mesh_nodes_up:count{job="x0tta6bl4"}') == 4, 20)
        yield mesh, prometheus
    finally:
        prometheus.stop()
        mesh.stop()
        server.shutdown()


def promql(expression: str) -> str:
    """A dashboard expression as Prometheus runs it: Grafana's variables substituted, and
    `label_values(EXPR, label)` of variable queries reduced to EXPR."""
    match = re.fullmatch(r"label_values\((.*),\s*\w+\)", expression.strip(), re.S)
    if match:
        expression = match.group(1)
    for variable, value in {"$__rate_interval": "1m", "$job": "x0tta6bl4", "$mesh": ".*", "$instance": ".*",
                            "$scenario": ".*", "$topology": ".*"}.items():
        expression = expression.replace(variable, value)
    assert "$" not in expression, f"unknown variable in {expression}"
    return expression


def test_every_dashboard_and_rule_query_runs(stack):
    _, prometheus = stack
    expressions = [e for board in dashboards().values() for e in dashboard_expressions(board)]
    expressions += list(rule_expressions().values())
    assert len(expressions) > 50
    for expression in expressions:
        prometheus.query(promql(expression))  # raises on a parse or evaluation error


def test_digital_twin_dashboard_shows_the_twin_file(stack):
    """Every query of the digital-twin dashboard that reads twin metrics returns series
    from the scraped `twin run --metrics-out` file."""
    _, prometheus = stack
    eventually("the twin textfile to be scraped",
               lambda: prometheus.query("x0tta6bl4_twin_nodes"), 10)
    board = dashboards()["digital-twin.json"]
    twin_queries = [e for e in dashboard_expressions(board) if "x0tta6bl4_twin_" in e]
    assert len(twin_queries) >= 6
    for expression in twin_queries:
        assert prometheus.query(promql(expression)), f"no series for {expression}"
    p95 = prometheus.value('x0tta6bl4_twin_mttr_seconds{quantile="0.95"}')
    assert p95 is not None and 0.01 < p95 < 5


def start_flows(mesh: Mesh) -> None:
    for node in mesh.nodes.values():
        targets = [name for name in NAMES if name != node.name]
        status, text = http(node.api + "/api/v1/flows", "POST", {"targets": targets, "interval_ms": 10})
        assert status == 200, text


def test_killing_a_node_fires_node_down_and_records_mttr(stack):
    mesh, prometheus = stack
    start_flows(mesh)
    time.sleep(2)
    routes = {r["destination"]: r["next_hop"] for r in mesh["a"].get("/api/v1/routes")}
    victim = mesh[routes["d"]]  # b or c: a's flows to d cross it
    assert victim.name in ("b", "c")
    outages_before = prometheus.value('sum(x0tta6bl4_flow_outage_seconds_count{job="x0tta6bl4"})') or 0
    killed_at = time.monotonic()
    victim.kill()

    # The receivers observed outages, and the recording rules turned them into MTTR.
    eventually("outages to be counted",
               lambda: (prometheus.value('sum(x0tta6bl4_flow_outage_seconds_count{job="x0tta6bl4"})') or 0)
               > outages_before, 15)
    p50 = eventually("the MTTR p50 recording rule to have a value",
                     lambda: prometheus.value('x0tta6bl4:flow_outage_seconds:p50_5m{job="x0tta6bl4"}'), 15)
    p95 = prometheus.value('x0tta6bl4:flow_outage_seconds:p95_5m{job="x0tta6bl4"}')
    assert 0.01 <= p50 <= 2.0, f"MTTR p50 {p50} s"
    assert p95 is not None and p50 <= p95 <= 30
    receiver = mesh["d"].metrics()
    count = re.search(r"^x0tta6bl4_flow_outage_seconds_count (\S+)", receiver, re.M)
    assert count and float(count.group(1)) >= 1, "d saw no outage of a's flow"

    # Prometheus notices the dead node; after the rule's 30 s it fires.
    instance = victim.api.removeprefix("http://")
    firing = eventually(
        "X0tta6bl4NodeDown to fire",
        lambda: [a for a in prometheus.alerts("X0tta6bl4NodeDown", "firing")
                 if a["labels"]["instance"] == instance],
        60, every_s=0.5)
    assert len(firing) == 1
    took = time.monotonic() - killed_at
    assert 30 <= took <= 60, f"fired {took:.1f} s after the kill (rule: for 30s)"
    others = [a["labels"]["instance"] for a in prometheus.alerts("X0tta6bl4NodeDown", "firing")]
    assert others == [instance], f"only the killed node is down: {others}"

    # Its neighbours see it down too (pending or firing after the rule's 1m); the
    # survivors still reach each other, so no partition, and connectivity is 2/3.
    reporters = {a["labels"]["instance"] for state in ("pending", "firing")
                 for a in prometheus.alerts("X0tta6bl4NeighbourDown", state)}
    expected = {mesh[n].api.removeprefix("http://") for n in ("a", "d")}
    assert reporters == expected, (reporters, expected)
    assert prometheus.alerts("X0tta6bl4MeshPartitioned", "firing") == []
    assert prometheus.value('x0tta6bl4:routes_missing:count{job="x0tta6bl4"} > 0') is None
    connectivity = prometheus.value('x0tta6bl4:mesh_connectivity:ratio{job="x0tta6bl4"}')
    assert connectivity == pytest.approx(2 / 3)
