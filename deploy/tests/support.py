"""Helpers shared by the deploy tests: the real binary, a CA, node processes on loopback,
HTTP, and the metric names that dashboards and rules use."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "monitoring" / "prometheus" / "x0tta6bl4-rules.yml"
GRAFANA = DEPLOY / "monitoring" / "grafana"
TWIN_METRICS = DEPLOY / "monitoring" / "twin-metrics.txt"
CHART = DEPLOY / "helm" / "x0tta6bl4"
CHAOS = DEPLOY / "chaos-mesh"


def binary() -> Path:
    """The x0tta6bl4 binary (run.sh builds it; X0TTA6BL4_BIN overrides)."""
    path = Path(os.environ.get("X0TTA6BL4_BIN", ROOT / "target" / "release" / "x0tta6bl4"))
    if not path.is_file():
        raise RuntimeError(f"{path} missing: run `cargo build --release -p x0tta6bl4-cli`")
    return path


def run(*args: str | Path, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the binary with `args`; output captured as text."""
    return subprocess.run(
        [str(binary()), *map(str, args)],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


def make_ca(directory: Path, names: list[str], trust_domain: str = "test.x0tta6bl4") -> Path:
    """A trust-domain CA in `directory/ca` with one SVID per name in `ca/NAME`."""
    ca = directory / "ca"
    run("ca", "init", "--trust-domain", trust_domain, "--dir", ca)
    for name in names:
        run("ca", "issue", "--dir", ca, "--name", name)
    return ca


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 for both TCP and UDP (checked, then released)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, other) as second:
                try:
                    second.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def http(url: str, method: str = "GET", body: Any = None, timeout: float = 5) -> tuple[int, str]:
    """Status and text of an HTTP request; a JSON `body` is encoded."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def eventually(what: str, check: Callable[[], Any], limit_s: float, every_s: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail after `limit_s` seconds."""
    deadline = time.monotonic() + limit_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError, KeyError) as error:
            last_error = error
        time.sleep(every_s)
    raise AssertionError(f"timed out after {limit_s} s waiting for {what} (last error: {last_error})")


class Node:
    """One `x0tta6bl4 node` process on loopback."""

    def __init__(self, directory: Path, ca: Path, name: str):
        self.name = name
        self.quic_port = free_port(socket.SOCK_DGRAM)
        self.api_port = free_port()
        self.config = directory / f"{name}.toml"
        self.log = directory / f"{name}.log"
        self.identity = ca / name
        self.process: subprocess.Popen | None = None

    @property
    def quic(self) -> str:
        return f"127.0.0.1:{self.quic_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def write_config(self, peers: list["Node"]) -> None:
        peer_list = ", ".join(f'"{peer.quic}"' for peer in peers)
        self.config.write_text(
            f'listen = "{self.quic}"\n'
            f'api_listen = "127.0.0.1:{self.api_port}"\n'
            f"peers = [{peer_list}]\n"
            f"[identity]\n"
            f'dir = "{self.identity}"\n'
        )

    def start(self) -> None:
        # The node exits by itself if this test process dies (see crates/cli node_cmd.rs).
        env = {**os.environ, "X0TTA6BL4_PARENT_PID": str(os.getpid())}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(binary()), "node", "--config", str(self.config), "--log-level", "warn"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path: str) -> Any:
        status, text = http(self.api + path)
        if status != 200:
            raise ValueError(f"{self.name} {path}: HTTP {status}: {text}")
        return json.loads(text)

    def metrics(self) -> str:
        status, text = http(self.api + "/metrics")
        assert status == 200, f"{self.name} /metrics: HTTP {status}"
        return text


class Mesh:
    """Node processes on loopback with static peers: `links` lists (a, b) where a dials b."""

    def __init__(self, directory: Path, names: list[str], links: list[tuple[str, str]]):
        ca = make_ca(directory, names)
        self.nodes = {name: Node(directory, ca, name) for name in names}
        for name, node in self.nodes.items():
            node.write_config([self.nodes[b] for a, b in links if a == name])

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def start(self) -> "Mesh":
        for node in self.nodes.values():
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def wait_converged(self, limit_s: float = 20) -> None:
        """Every node has a route to every other."""
        others = len(self.nodes) - 1

        def converged() -> bool:
            return all(len(node.get("/api/v1/routes")) == others for node in self.nodes.values())

        eventually("every node to route to every other", converged, limit_s)

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log.read_text()[-3000:]}" for n in self.nodes.values())


class Prometheus:
    """A real Prometheus (Debian `prometheus`) on loopback, its data in `directory`: the
    repository's rules, `scrape_configs`, 1 s scrape and evaluation intervals. `flags` are
    extra command-line flags. Killed after `lifetime_s` whatever happens to the test."""

    def __init__(self, directory: Path, scrape_configs: list[dict], lifetime_s: float = 170,
                 flags: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "prometheus.log"
        self.lifetime_s, self.flags = lifetime_s, flags
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(RULES)],
            "scrape_configs": scrape_configs,
        }
        self.config = directory / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            "timeout", "-s", "KILL", str(int(self.lifetime_s)),
            shutil.which("prometheus") or "prometheus",
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.data}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
            *self.flags,
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        eventually("Prometheus to be ready", lambda: http(self.url + "/-/ready")[0] == 200, 30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, **params: str) -> dict:
        query = urllib.parse.urlencode(params)
        status, text = http(f"{self.url}/api/v1/{path}?{query}")
        body = json.loads(text)
        if status != 200 or body.get("status") != "success":
            raise AssertionError(f"{path} {params}: HTTP {status}: {text}")
        return body["data"]

    def query(self, expression: str) -> list[dict]:
        return self.api("query", query=expression)["result"]

    def value(self, expression: str) -> float | None:
        """The single value of an instant query, None when empty or NaN."""
        result = self.query(expression)
        if not result:
            return None
        assert len(result) == 1, f"{expression}: {result}"
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    def alerts(self, name: str, state: str) -> list[dict]:
        return [a for a in self.api("alerts")["alerts"]
                if a["labels"]["alertname"] == name and a["state"] == state]


# ----- metric names -----

NAME = re.compile(r"\b(x0tta6bl4_[a-zA-Z0-9_]+|x0tta6bl4:[a-zA-Z0-9_:]+)")


def names_in(expression: str) -> set[str]:
    """x0tta6bl4 metric names (`x0tta6bl4_...`) and recorded series (`x0tta6bl4:...`) that
    a PromQL expression names; label values in quotes are skipped."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    return set(NAME.findall(unquoted))


def exported_names(exposition: str) -> set[str]:
    """Sample names of an OpenMetrics / Prometheus text exposition: a histogram appears as
    its _bucket, _sum and _count series, a counter with its _total suffix."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def documented_families(exposition: str) -> set[str]:
    """Metric families as docs/metrics.md names them: counters with `_total`, histograms
    by their family name, gauges as is."""
    families = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            families.add(family + "_total" if kind.strip() == "counter" else family)
    return families


def rule_groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def rule_expressions() -> dict[str, str]:
    """Every rule's expression, keyed by its record or alert name."""
    return {
        rule.get("record") or rule["alert"]: rule["expr"]
        for group in rule_groups()
        for rule in group["rules"]
    }


def recorded_names() -> set[str]:
    return {rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule}


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(GRAFANA.glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    """Every panel, rows' nested panels included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_expressions(dashboard: dict) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets and query variables."""
    expressions = [
        target["expr"]
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            expressions.append(query["query"] if isinstance(query, dict) else query)
    return expressions


def twin_metric_names() -> dict[str, set[str]]:
    """deploy/monitoring/twin-metrics.txt: name -> label names."""
    names = {}
    for line in TWIN_METRICS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, labels = line.split()
            names[name] = set(labels.split(","))
    return names
