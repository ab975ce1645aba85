"""The Grafana dashboards are what build.py writes, and are well-formed Grafana JSON.
(Their queries are checked against a live node in test_metric_names.py and run by a real
Prometheus in test_live_stack.py.)"""

from __future__ import annotations

import importlib.util
import itertools

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
