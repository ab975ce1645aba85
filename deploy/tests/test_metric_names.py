"""Every metric a dashboard or rule names is one a live node exports (or the twin writes),
and docs/metrics.md documents exactly what a live node exports."""

from __future__ import annotations

import re

import pytest

from support import (
    ROOT,
    Mesh,
    dashboard_expressions,
    dashboards,
    documented_families,
    eventually,
    exported_names,
    http,
    names_in,
    recorded_names,
    rule_expressions,
    run,
    twin_metric_names,
)


@pytest.fixture(scope="module")
def expositions(tmp_path_factory) -> list[str]:
    """Names scraped from two real node processes linked to each other, once their links
    are measured and a probe flow runs (so per-link series exist)."""
    mesh = Mesh(tmp_path_factory.mktemp("names"), ["a", "b"], [("a", "b")]).start()
    try:
        mesh.wait_converged()
        a, b = mesh["a"], mesh["b"]
        a_flows = {"targets": ["b"], "interval_ms": 10}
        assert http(a.api + "/api/v1/flows", "POST", a_flows)[0] == 200
        eventually("link RTTs to be measured",
                   lambda: all("x0tta6bl4_link_rtt_seconds{" in n.metrics() for n in (a, b)), 10)
        return [node.metrics() for node in (a, b)]
    finally:
        mesh.stop()


@pytest.fixture(scope="module")
def exported(expositions) -> set[str]:
    return set().union(*map(exported_names, expositions))


def used_names() -> dict[str, set[str]]:
    """Where each x0tta6bl4 name is used: name -> {places}."""
    used: dict[str, set[str]] = {}
    for name, expression in rule_expressions().items():
        for metric in names_in(expression):
            used.setdefault(metric, set()).add(f"rule {name}")
    for file, board in dashboards().items():
        for expression in dashboard_expressions(board):
            for metric in names_in(expression):
                used.setdefault(metric, set()).add(f"dashboard {file}")
    return used


def missing(used: dict[str, set[str]], exported: set[str]) -> dict[str, set[str]]:
    twin = twin_metric_names()
    recorded = recorded_names()
    absent = {}
    for name, places in used.items():
        if name.startswith("x0tta6bl4:"):
            known = name in recorded
        elif name.startswith("x0tta6bl4_twin_"):
            known = name in twin
        else:
            known = name in exported
        if not known:
            absent[name] = places
    return absent


def test_dashboards_and_rules_name_only_exported_metrics(exported):
    used = used_names()
    # The extraction finds what the dashboards obviously use.
    assert "x0tta6bl4_flow_outage_seconds_bucket" in used
    assert "x0tta6bl4:flow_outage_seconds:p95_5m" in used
    assert "x0tta6bl4_twin_mttr_seconds" in used
    assert missing(used, exported) == {}


def test_check_catches_unknown_names(exported):
    """The check above can fail: a typo, a wrong histogram suffix, an unknown twin or
    recorded name are all reported."""
    used = {
        "x0tta6bl4_route_change_total": {"x"},
        "x0tta6bl4_routes_bucket": {"x"},
        "x0tta6bl4_twin_mttr_ms": {"x"},
        "x0tta6bl4:mttr:p95": {"x"},
        "x0tta6bl4_route_computation_seconds_bucket": {"x"},
    }
    assert set(missing(used, exported)) == set(used) - {"x0tta6bl4_route_computation_seconds_bucket"}
    assert names_in('x0tta6bl4_routes{job="x0tta6bl4_fake"} + x0tta6bl4:a:b') == {
        "x0tta6bl4_routes", "x0tta6bl4:a:b"}


def test_metrics_doc_lists_exactly_the_exported_metrics(expositions):
    """docs/metrics.md names every exported family, and nothing else."""
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`(x0tta6bl4_[a-z0-9_]+)[`{]", doc))
    families = set().union(*map(documented_families, expositions))
    assert len(families) > 30
    assert families - documented == set(), "exported but not in docs/metrics.md"
    # The eBPF collector's own families exist only in a node built with the `ebpf`
    # feature while the collector runs (docs/metrics.md, "Telemetry"); this build has none.
    collector_only = {name for name in documented if name.startswith("x0tta6bl4_kernel_")}
    assert len(collector_only) == 3, collector_only
    assert families & collector_only == set(), "the default build exports collector families"
    assert documented - families - collector_only == set(), "in docs/metrics.md but not exported"


def test_twin_writes_exactly_the_listed_metrics(tmp_path):
    """`x0tta6bl4 twin run --metrics-out` writes the names and labels of twin-metrics.txt."""
    out = tmp_path / "twin.prom"
    # A ring: every node carries flows, so the one iteration measures some (a `twin run`
    # that measures nothing exits 1).
    run("twin", "run", "--topology", "ring", "--nodes", "8", "--iterations", "1",
        "--metrics-out", out, "--json")
    written: dict[str, set[str]] = {}
    for line in out.read_text().splitlines():
        if line and not line.startswith("#"):
            match = re.match(r"([a-z0-9_]+)\{([^}]*)\} \S+$", line)
            assert match, f"not a labelled sample: {line!r}"
            labels = set(re.findall(r'([a-z_]+)="', match.group(2)))
            written.setdefault(match.group(1), set()).update(labels)
    assert written == twin_metric_names()
