"""The Grafana dashboards are what build.py writes, and are well-formed Grafana JSON.
(Their queries are checked against a live node in test_metric_names.py and run by a real
Prometheus in test_live_stack.py.)"""

from __future__ import annotations

import importlib.util
import itertools
import re
from pathlib import Path

from support import GRAFANA, dashboards, panels

EXPECTED = {"mesh-overview.json", "mttr-healing.json", "identity.json", "digital-twin.json"}


def build_module():
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_files_are_up_to_date_with_build_py():
    rendered = build_module().render()
    assert set(rendered) == EXPECTED == set(dashboards())
    for name, text in rendered.items():
        assert (GRAFANA / name).read_text() == text, f"{name}: run python3 deploy/monitoring/grafana/build.py"


def overlaps(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def test_dashboards_are_well_formed():
    uids = [board["uid"] for board in dashboards().values()]
    assert len(set(uids)) == len(uids) == 4
    for name, board in dashboards().items():
        assert board["title"].startswith("x0tta6bl4 / ") and board["schemaVersion"] >= 36, name
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels(board):
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, (name, panel["title"])
            if panel["type"] == "text":
                continue
            assert panel["description"], (name, panel["title"])
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))
            for used in ("$instance", "$job", "$scenario", "$topology"):
                if any(used in t["expr"] for t in panel["targets"]):
                    assert used[1:] in variables, (name, panel["title"], used)
        for a, b in itertools.combinations(panels(board), 2):
            assert not overlaps(a["gridPos"], b["gridPos"]), (name, a["title"], b["title"])


SELECTOR = re.compile(r"\b(x0tta6bl4[_:][A-Za-z0-9_:]*)(\{[^}]*\})?")


def mesh_selectors(expr: str) -> list[tuple[str, str]]:
    """Every (metric, matchers) selector of a live mesh series in `expr` (the twin's
    x0tta6bl4_twin_* gauges describe simulations, not a mesh)."""
    return [(m.group(1), m.group(2) or "") for m in SELECTOR.finditer(expr)
            if not m.group(1).startswith("x0tta6bl4_twin_")]


def test_every_mesh_query_is_filtered_by_the_mesh_variable():
    """One dashboard serves several meshes (releases): every selector of a mesh series,
    in panels and in query variables, is filtered by `$mesh` (the job variable, which
    lists the meshes' jobs, excepted) and every dashboard that has one has the variable."""
    checked = 0
    for name, board in dashboards().items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        expressions = [(p["title"], t["expr"]) for p in panels(board) if p["type"] != "text"
                       for t in p["targets"]]
        expressions += [(f"variable {v['name']}", v["definition"])
                        for v in variables.values()
                        if v["type"] == "query" and v["name"] not in ("job", "mesh")]
        for where, expr in expressions:
            for metric, matchers in mesh_selectors(expr):
                assert 'mesh=~"$mesh"' in matchers, (name, where, metric, expr)
                checked += 1
        if any(mesh_selectors(expr) for _, expr in expressions):
            mesh = variables["mesh"]
            assert mesh["multi"] and mesh["includeAll"] and mesh["allValue"] == ".*", name
            assert mesh["definition"] == 'label_values(x0tta6bl4_build_info{job="$job"}, mesh)'
    assert checked > 50, checked


def test_the_mesh_label_the_dashboards_filter_on_is_the_one_the_chart_writes():
    monitor = (Path(__file__).resolve().parents[1] / "helm" / "x0tta6bl4" / "templates"
               / "servicemonitor.yaml").read_text()
    assert "targetLabel: mesh" in monitor
