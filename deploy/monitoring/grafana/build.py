#!/usr/bin/env python3
"""Writes the x0tta6bl4 Grafana dashboards (*.json beside this file).

Edit this file, then run `python3 deploy/monitoring/grafana/build.py`; the deploy tests
fail when the JSON files differ from what this script writes, when a query names a
metric a live node does not export, or when Prometheus refuses a query.

Every dashboard takes its Prometheus data source from the `datasource` variable, and the
mesh dashboards select one scrape job (`job`, default `x0tta6bl4`), one or more meshes
(`mesh`: the chart's release, which its ServiceMonitor writes as the `mesh` label; All
also matches series without the label, as a plain Prometheus scrape has) and some nodes
(`instance`). Every query of a dashboard with the `mesh` variable filters by it
(deploy/tests/test_dashboards.py checks that). Recorded series (`x0tta6bl4:...`) come from
deploy/monitoring/prometheus/x0tta6bl4-rules.yml.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NODE_FILTER = 'job="$job", mesh=~"$mesh", instance=~"$instance"'
JOB_FILTER = 'job="$job", mesh=~"$mesh"'
RATE = "$__rate_interval"


def target(expr: str, legend: str = "", ref: str = "A", **extra) -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, **extra}


class Layout:
    """Places panels left to right in rows of 24 grid units."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def place(self, width: int, height: int) -> dict:
        if self.x + width > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        position = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        self.row_height = max(self.row_height, height)
        return position

    def panel_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def panel(layout: Layout, kind: str, title: str, description: str, targets: list[dict],
          unit: str = "short", width: int = 12, height: int = 8, **options) -> dict:
    refs = "ABCDEFGH"
    for index, item in enumerate(targets):
        item["refId"] = refs[index]
    return {
        "id": layout.panel_id(),
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": layout.place(width, height),
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": options,
    }


def text_panel(layout: Layout, title: str, content: str, width: int = 24, height: int = 3) -> dict:
    return {
        "id": layout.panel_id(),
        "type": "text",
        "title": title,
        "gridPos": layout.place(width, height),
        "options": {"mode": "markdown", "content": content},
    }


def variables(mesh: bool = True, extra: list[dict] | None = None) -> dict:
    items: list[dict] = [{
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
    }]
    if mesh:
        items.append(query_variable("job", "label_values(x0tta6bl4_build_info, job)",
                                    default="x0tta6bl4"))
        items.append(MESH_VARIABLE)
        items.append(query_variable("instance",
                                    f"label_values(x0tta6bl4_build_info{{{JOB_FILTER}}}, instance)",
                                    multi=True))
    items.extend(extra or [])
    return {"list": items}


def query_variable(name: str, query: str, multi: bool = False, default: str | None = None) -> dict:
    variable = {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "hide": 0,
    }
    if multi:
        variable["allValue"] = ".*"
        variable["current"] = {"text": "All", "value": "$__all"}
    elif default:
        variable["current"] = {"text": default, "value": default}
    return variable


MESH_VARIABLE = query_variable("mesh", 'label_values(x0tta6bl4_build_info{job="$job"}, mesh)',
                               multi=True)


def dashboard(uid: str, title: str, description: str, panels: list[dict], templating: dict) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["x0tta6bl4"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "",
        "templating": templating,
        "annotations": {"list": []},
        "links": [{
            "type": "dashboards", "tags": ["x0tta6bl4"], "asDropdown": True, "title": "x0tta6bl4",
        }],
        "panels": panels,
    }


def mesh_overview() -> dict:
    l = Layout()
    panels = [
        panel(l, "stat", "Nodes answering", "Scrape targets of the job that answer (up == 1).",
              [target(f"x0tta6bl4:mesh_nodes_up:count{{{JOB_FILTER}}}")], width=4, height=4),
        panel(l, "stat", "Nodes expected", "Scrape targets of the job, answering or not.",
              [target(f"x0tta6bl4:mesh_nodes:count{{{JOB_FILTER}}}")], width=4, height=4),
        panel(l, "stat", "Mesh connectivity",
              "Mean over nodes of routes / (nodes - 1): 100% when every node reaches every other.",
              [target(f"x0tta6bl4:mesh_connectivity:ratio{{{JOB_FILTER}}}")],
              unit="percentunit", width=4, height=4),
        panel(l, "stat", "Live nodes unreachable",
              "Sum over nodes of answering nodes they have no route to. Above 0: partition.",
              [target(f"sum(x0tta6bl4:routes_missing:count{{{JOB_FILTER}}})")], width=4, height=4),
        panel(l, "stat", "Neighbours down", "Neighbours declared down, summed over nodes.",
              [target(f'sum(x0tta6bl4_neighbours{{{JOB_FILTER}, state="down"}})')],
              width=4, height=4),
        panel(l, "stat", "Versions", "Nodes by version (x0tta6bl4_build_info).",
              [target(f"count by (version) (x0tta6bl4_build_info{{{JOB_FILTER}}})", "{{version}}")],
              width=4, height=4),
        panel(l, "timeseries", "Routes per node", "Destinations each node has a route to.",
              [target(f"x0tta6bl4_routes{{{NODE_FILTER}}}", "{{instance}}")]),
        panel(l, "timeseries", "Neighbours by state",
              "init: link open, nothing heard; up; down; damped: suppressed for flapping.",
              [target(f"sum by (state) (x0tta6bl4_neighbours{{{NODE_FILTER}}})", "{{state}}")]),
        panel(l, "timeseries", "Link RTT", "Smoothed probe round-trip time per link.",
              [target(f"x0tta6bl4_link_rtt_seconds{{{NODE_FILTER}}}", "{{instance}} → {{neighbour}}")],
              unit="s"),
        panel(l, "timeseries", "Link loss", "Estimated probe loss per link (healing degrades links above 20%).",
              [target(f"x0tta6bl4_link_loss_ratio{{{NODE_FILTER}}}", "{{instance}} → {{neighbour}}")],
              unit="percentunit"),
        panel(l, "timeseries", "Application messages",
              "Messages (API sends and probe flows) originated, forwarded and delivered per second.",
              [target(f"sum(rate(x0tta6bl4_messages_originated_total{{{NODE_FILTER}}}[{RATE}]))", "originated"),
               target(f"sum(rate(x0tta6bl4_messages_forwarded_total{{{NODE_FILTER}}}[{RATE}]))", "forwarded"),
               target(f"sum(rate(x0tta6bl4_messages_delivered_total{{{NODE_FILTER}}}[{RATE}]))", "delivered")],
              unit="ops"),
        panel(l, "timeseries", "Drops by reason", "Everything dropped, per second, by reason (docs/metrics.md).",
              [target(f"sum by (reason) (rate(x0tta6bl4_dropped_total{{{NODE_FILTER}}}[{RATE}])) > 0", "{{reason}}")],
              unit="ops"),
        panel(l, "timeseries", "Protocol traffic",
              "Bytes per second of protocol frames, and of link-state advertisements among them.",
              [target(f"sum(rate(x0tta6bl4_frames_sent_bytes_total{{{NODE_FILTER}}}[{RATE}]))", "frames"),
               target(f"sum(rate(x0tta6bl4_lsa_sent_bytes_total{{{NODE_FILTER}}}[{RATE}]))", "advertisements")],
              unit="Bps"),
        panel(l, "timeseries", "Link-state database", "Advertisements held per node.",
              [target(f"x0tta6bl4_lsdb_entries{{{NODE_FILTER}}}", "{{instance}}")]),
        panel(l, "table", "Nodes", "Scrape target, node name and SPIFFE ID, uptime.",
              [target(f"x0tta6bl4_node_info{{{NODE_FILTER}}}", format="table", instant=True),
               target(f"x0tta6bl4_uptime_seconds{{{NODE_FILTER}}}", format="table", instant=True)],
              width=24, height=8),
    ]
    return dashboard("x0tta6bl4-mesh-overview", "x0tta6bl4 / Mesh overview",
                     "Size, connectivity, links, traffic and drops of one x0tta6bl4 mesh.",
                     panels, variables())


def mttr_healing() -> dict:
    l = Layout()
    quantile_series = [
        target(f"x0tta6bl4:flow_outage_seconds:p50_5m{{{JOB_FILTER}}}", "p50"),
        target(f"x0tta6bl4:flow_outage_seconds:p95_5m{{{JOB_FILTER}}}", "p95"),
        target(f"x0tta6bl4:flow_outage_seconds:p99_5m{{{JOB_FILTER}}}", "p99"),
        target(f"x0tta6bl4:flow_outage_seconds:mean_5m{{{JOB_FILTER}}}", "mean"),
    ]
    panels = [
        text_panel(l, "How MTTR is measured",
                   "Probe flows (`POST /api/v1/flows`) send a message every few ms between nodes. "
                   "A receiver that sees a gap longer than 3 sender intervals records it in "
                   "`x0tta6bl4_flow_outage_seconds`: the time from the last probe delivered before "
                   "a fault to the first after it. No flows, no MTTR. Runbook: docs/runbook-mttr.md."),
        panel(l, "stat", "MTTR p50 (5m)", "Median outage over the last 5 minutes.",
              [target(f"x0tta6bl4:flow_outage_seconds:p50_5m{{{JOB_FILTER}}}")], unit="s", width=6, height=4),
        panel(l, "stat", "MTTR p95 (5m)", "95th percentile outage; alert above 250 ms.",
              [target(f"x0tta6bl4:flow_outage_seconds:p95_5m{{{JOB_FILTER}}}")], unit="s", width=6, height=4),
        panel(l, "stat", "MTTR p99 (5m)", "99th percentile outage.",
              [target(f"x0tta6bl4:flow_outage_seconds:p99_5m{{{JOB_FILTER}}}")], unit="s", width=6, height=4),
        panel(l, "stat", "Outages (1h)", "Flow outages observed in the last hour.",
              [target(f"sum(increase(x0tta6bl4_flow_outage_seconds_count{{{JOB_FILTER}}}[1h]))")],
              width=6, height=4),
        panel(l, "timeseries", "MTTR quantiles", "Outage quantiles over sliding 5-minute windows.",
              quantile_series, unit="s"),
        panel(l, "heatmap", "Outage distribution", "Outages per bucket of duration.",
              [target(f"sum by (le) (increase(x0tta6bl4_flow_outage_seconds_bucket{{{NODE_FILTER}}}[{RATE}]))",
                      "{{le}}", format="heatmap")],
              unit="s", calculate=False),
        panel(l, "timeseries", "MTTR p95 by receiving node", "Where outages were seen.",
              [target("histogram_quantile(0.95, sum by (instance, le) "
                      f"(rate(x0tta6bl4_flow_outage_seconds_bucket{{{NODE_FILTER}}}[5m])))", "{{instance}}")],
              unit="s"),
        panel(l, "timeseries", "Healing decisions",
              "withdraw: dead neighbour; reroute: degraded link's cost raised; damp: flapping; restore.",
              [target(f"sum by (kind) (increase(x0tta6bl4_healing_decisions_total{{{NODE_FILTER}}}[{RATE}]))", "{{kind}}"),
               target(f"sum(increase(x0tta6bl4_neighbour_down_total{{{NODE_FILTER}}}[{RATE}]))", "neighbour down")]),
        panel(l, "timeseries", "Route changes and computations", "Per second, over the selected nodes.",
              [target(f"sum(rate(x0tta6bl4_route_changes_total{{{NODE_FILTER}}}[{RATE}]))", "route changes"),
               target(f"sum(rate(x0tta6bl4_route_computations_total{{{NODE_FILTER}}}[{RATE}]))", "computations")],
              unit="ops"),
        panel(l, "timeseries", "Route computation time", "p50 and p99 of timer handling that ran a computation.",
              [target("histogram_quantile(0.5, sum by (le) "
                      f"(rate(x0tta6bl4_route_computation_seconds_bucket{{{NODE_FILTER}}}[5m])))", "p50"),
               target("histogram_quantile(0.99, sum by (le) "
                      f"(rate(x0tta6bl4_route_computation_seconds_bucket{{{NODE_FILTER}}}[5m])))", "p99")],
              unit="s"),
        panel(l, "timeseries", "Link-state flooding", "Advertisements per second.",
              [target(f"sum(rate(x0tta6bl4_lsa_originated_total{{{NODE_FILTER}}}[{RATE}]))", "originated"),
               target(f"sum(rate(x0tta6bl4_lsa_received_total{{{NODE_FILTER}}}[{RATE}]))", "received"),
               target(f"sum(rate(x0tta6bl4_lsa_installed_total{{{NODE_FILTER}}}[{RATE}]))", "installed"),
               target(f"sum(rate(x0tta6bl4_lsa_sent_total{{{NODE_FILTER}}}[{RATE}]))", "sent"),
               target(f"sum(rate(x0tta6bl4_lsa_retransmitted_total{{{NODE_FILTER}}}[{RATE}]))", "retransmitted"),
               target(f"sum(rate(x0tta6bl4_lsa_expired_total{{{NODE_FILTER}}}[{RATE}]))", "expired")],
              unit="ops"),
        panel(l, "timeseries", "Probe flows", "Probe-flow messages sent per second.",
              [target(f"sum by (instance) (rate(x0tta6bl4_flow_probes_sent_total{{{NODE_FILTER}}}[{RATE}]))",
                      "{{instance}}")],
              unit="ops"),
    ]
    return dashboard("x0tta6bl4-mttr-healing", "x0tta6bl4 / MTTR and healing",
                     "Data-plane outages measured by probe flows, and what the healing loop did.",
                     panels, variables())


def identity() -> dict:
    l = Layout()
    panels = [
        panel(l, "stat", "Earliest SVID expiry", "Time until the first SVID of the mesh expires.",
              [target(f"min(x0tta6bl4_svid_expiry_timestamp_seconds{{{JOB_FILTER}}}) - time()")],
              unit="s", width=8, height=4),
        panel(l, "stat", "Failed handshakes (1h)", "QUIC + mTLS handshakes that failed.",
              [target(f'sum(increase(x0tta6bl4_handshakes_total{{{JOB_FILTER}, result="failed"}}[1h]))')],
              width=8, height=4),
        panel(l, "stat", "Forged advertisements (1h)",
              "Advertisements dropped for a bad signature or inconsistent content.",
              [target("sum(increase(x0tta6bl4_dropped_total{"
                      f'{JOB_FILTER}, reason=~"bad_signature|bad_advertisement"}}[1h]))')],
              width=8, height=4),
        panel(l, "table", "SVID expiry per node", "Seconds until each node's X.509-SVID expires.",
              [target(f"x0tta6bl4_svid_expiry_timestamp_seconds{{{NODE_FILTER}}} - time()",
                      format="table", instant=True)],
              unit="s"),
        panel(l, "table", "Node identities", "SPIFFE ID of each node.",
              [target(f"x0tta6bl4_node_info{{{NODE_FILTER}}}", format="table", instant=True)]),
        panel(l, "timeseries", "Handshakes by result",
              "ok: peer SVID names a node; failed: TLS/verification failed or timeout; "
              "rejected: SPIFFE ID is not a node's.",
              [target(f"sum by (result) (rate(x0tta6bl4_handshakes_total{{{NODE_FILTER}}}[{RATE}]))", "{{result}}")],
              unit="ops"),
        panel(l, "timeseries", "Handshakes by key-exchange group",
              "X25519MLKEM768 is the post-quantum hybrid; anything else is a classical fallback "
              "([identity] kx).",
              [target(f"sum by (group) (rate(x0tta6bl4_kx_handshakes_total{{{NODE_FILTER}}}[{RATE}]))", "{{group}}")],
              unit="ops"),
        panel(l, "timeseries", "Frames refused",
              "Per node and reason: forged advertisements (bad_signature), inconsistent ones "
              "(bad_advertisement), frames from non-neighbours (not_neighbour), replayed data "
              "(replayed), data from nodes the mesh does not know (unknown_source).",
              [target("sum by (instance, reason) (rate(x0tta6bl4_dropped_total{"
                      f'{NODE_FILTER}, reason=~"bad_signature|bad_advertisement|not_neighbour|replayed|unknown_source"}}[{RATE}]))',
                      "{{instance}} {{reason}}")],
              unit="ops"),
        panel(l, "timeseries", "Policy decisions",
              "Authorization decisions by outcome and action (neighbour, send, api); the node "
              "logs each with the rule that decided it.",
              [target(f"sum by (decision, action) (rate(x0tta6bl4_policy_decisions_total{{{NODE_FILTER}}}[{RATE}]))",
                      "{{decision}} {{action}}")],
              unit="ops"),
    ]
    return dashboard("x0tta6bl4-identity", "x0tta6bl4 / Identity",
                     "SVID lifetimes, mutual-TLS handshakes and refused advertisements.",
                     panels, variables())


def digital_twin() -> dict:
    l = Layout()
    twin = 'scenario=~"$scenario", topology=~"$topology"'
    panels = [
        text_panel(l, "Where these numbers come from",
                   "`x0tta6bl4 twin run --metrics-out FILE` writes `x0tta6bl4_twin_*` gauges "
                   "(deploy/monitoring/twin-metrics.txt) for a node_exporter textfile collector. "
                   "The twin runs the node's protocol code in simulated time."),
        panel(l, "table", "Predicted MTTR", "Outage quantiles per scenario and topology.",
              [target(f"x0tta6bl4_twin_mttr_seconds{{{twin}}}", format="table", instant=True)],
              unit="s", width=24),
        panel(l, "bargauge", "Predicted MTTR p95", "95th percentile outage per scenario and topology.",
              [target(f'x0tta6bl4_twin_mttr_seconds{{{twin}, quantile="0.95"}}', "{{scenario}} / {{topology}}")],
              unit="s"),
        panel(l, "timeseries", "Twin p95 vs live p95",
              "The twin's prediction against the p95 measured by the live mesh's probe flows.",
              [target(f'max(x0tta6bl4_twin_mttr_seconds{{{twin}, quantile="0.95"}})', "twin"),
               target(f"max(x0tta6bl4:flow_outage_seconds:p95_5m{{{JOB_FILTER}}})", "live")],
              unit="s"),
        panel(l, "bargauge", "Convergence", "Simulated time until the mesh first converged.",
              [target(f"x0tta6bl4_twin_converged_seconds{{{twin}}}", "{{scenario}} / {{topology}}")],
              unit="s", width=8),
        panel(l, "bargauge", "Unreachable pairs after heal",
              "Connected pairs without a working path after the scenario (should be 0).",
              [target(f"x0tta6bl4_twin_unreachable_pairs{{{twin}}}", "{{scenario}} / {{topology}}")],
              width=8),
        panel(l, "bargauge", "Simulation speed", "Simulated seconds per wall-clock second, and nodes.",
              [target(f"x0tta6bl4_twin_sim_seconds_per_wall_second{{{twin}}}", "{{scenario}} / {{topology}}"),
               target(f"x0tta6bl4_twin_nodes{{{twin}}}", "nodes {{scenario}} / {{topology}}")],
              width=8),
    ]
    extra = [
        query_variable("scenario", "label_values(x0tta6bl4_twin_nodes, scenario)", multi=True),
        query_variable("topology", 'label_values(x0tta6bl4_twin_nodes{scenario=~"$scenario"}, topology)',
                       multi=True),
        query_variable("job", "label_values(x0tta6bl4_build_info, job)", default="x0tta6bl4"),
        MESH_VARIABLE,
    ]
    return dashboard("x0tta6bl4-digital-twin", "x0tta6bl4 / Digital twin",
                     "MTTR predicted by the digital twin per scenario and topology, against the live mesh.",
                     panels, variables(mesh=False, extra=extra))


DASHBOARDS = {
    "mesh-overview.json": mesh_overview,
    "mttr-healing.json": mttr_healing,
    "identity.json": identity,
    "digital-twin.json": digital_twin,
}


def render() -> dict[str, str]:
    """File name -> JSON text, as written."""
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


if __name__ == "__main__":
    for name, text in render().items():
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")
