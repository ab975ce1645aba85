"""The Dockerfile (no Docker engine here, so checked by reading it) stays in step with the
binary's real flags, the Helm chart, the build's needs and .dockerignore."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tomllib

import helm_python as helm
import yaml

from support import CHART, ROOT, binary, run

DOCKERFILE = ROOT / "Dockerfile"
CONTAINERFILE = ROOT / "Containerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# What debian:*-slim has of the libraries a dynamically linked Rust binary may use
# (libc6 and libgcc-s1 are essential packages).
BASE_LIBRARIES = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1", "libpthread.so.0",
                  "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}


def instructions(path=DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#") and not current:
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages(path=DOCKERFILE) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(path):
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def args() -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in instructions() if i == "ARG" and "=" in a)


def expand(text: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args()[m.group(1)], text)


def last(stage, name: str) -> str:
    return [a for i, a in stage if i == name][-1]


def chart_pod() -> dict:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render({}, name="x0tta6bl4", namespace="x0tta6bl4")
    objects = [o for p, t in rendered.items() if p.endswith(".yaml") for o in yaml.safe_load_all(t) if o]
    return next(o for o in objects if o["kind"] == "StatefulSet")["spec"]["template"]


def test_multi_stage_rust_builder_to_debian_slim():
    builder, *_, runtime = stages()
    assert len(stages()) >= 2
    image, _, name = expand(builder[0][1]).partition(" AS ")
    assert image.startswith("rust:") and name == "builder"
    assert re.fullmatch(r"debian:[a-z]+-slim", expand(runtime[0][1]))
    rust = tuple(map(int, args()["RUST_VERSION"].split(".")))
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    minimum = tuple(map(int, workspace["workspace"]["package"]["rust-version"].split(".")))
    assert rust >= minimum
    build = " ".join(a for i, a in builder if i == "RUN")
    assert "cargo build --release --locked -p x0tta6bl4-cli" in build
    cli = tomllib.loads((ROOT / "crates" / "cli" / "Cargo.toml").read_text())
    assert cli["package"]["name"] == "x0tta6bl4-cli"
    assert [b["name"] for b in cli["bin"]] == ["x0tta6bl4"]
    copies = [a for i, a in runtime if i == "COPY"]
    assert any(c.startswith("--from=builder ") and c.endswith("/usr/local/bin/x0tta6bl4") for c in copies)


def test_runtime_runs_the_binary_as_the_charts_user():
    runtime = stages()[-1]
    user, _, group = last(runtime, "USER").partition(":")
    assert user.isdigit() and int(user) != 0
    security = chart_pod()["spec"]["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user), int(group))
    assert json.loads(last(runtime, "ENTRYPOINT")) == ["x0tta6bl4"]


def test_cmd_is_a_real_invocation_matching_the_chart(tmp_path):
    runtime = stages()[-1]
    command = json.loads(last(runtime, "CMD"))
    assert command == ["node", "--config", "/etc/x0tta6bl4/node.toml"]
    pod = chart_pod()
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "node")
    assert container["args"][:3] == command
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert f"{mount['mountPath']}/node.toml" == command[2]
    # The binary takes exactly these flags: run the command on a real config.
    config = tmp_path / "node.toml"
    config.write_text((ROOT / "examples" / "node.toml").read_text())
    # --check-config reads the policy file the example names.
    (tmp_path / "policy.toml").write_text((ROOT / "examples" / "policy.toml").read_text())
    result = run(*command[:2], config, "--check-config")
    assert result.stdout.strip() == "ok"
    assert "--config" in run("node", "--help").stdout


def test_exposed_ports_are_the_charts():
    exposed = set(" ".join(a for i, a in stages()[-1] if i == "EXPOSE").split())
    pod = chart_pod()
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "node")
    ports = {f"{p['containerPort']}/{p['protocol'].lower()}" for p in container["ports"]}
    assert exposed == ports == {"7001/udp", "8001/tcp"}


def test_both_images_run_the_same_way():
    """The Dockerfile (built from source on debian-slim) and the Containerfile (the small
    image of deploy/image/build.sh, FROM scratch) are two builds of one image contract:
    the chart and the lab take either, so their user, ports, entrypoint and command
    must not drift apart."""
    contract = {"USER", "EXPOSE", "ENTRYPOINT", "CMD"}
    docker = [(i, a) for i, a in stages()[-1] if i in contract]
    container = [(i, a) for i, a in stages(CONTAINERFILE)[-1] if i in contract]
    assert docker == container
    assert len(stages(CONTAINERFILE)) == 1 and stages(CONTAINERFILE)[0][0] == ("FROM", "scratch")


def test_binary_needs_only_base_image_libraries():
    ldd = subprocess.run(["ldd", str(binary())], capture_output=True, text=True, check=True).stdout
    libraries = {line.split()[0].rsplit("/", 1)[-1] for line in ldd.splitlines() if line.strip()}
    assert libraries <= BASE_LIBRARIES, libraries - BASE_LIBRARIES


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last match wins; a
    pattern matching a parent directory covers everything below it)."""
    verdict = False
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines()]
    for pattern in (p for p in patterns if p and not p.startswith("#")):
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


def test_build_context_has_what_the_build_copies():
    sources = []
    for instruction, arguments in instructions():
        if instruction == "COPY" and not arguments.startswith("--from"):
            sources += arguments.split()[:-1]
    assert sources, "no COPY from the build context"
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source), f"{source} is in .dockerignore"
    tracked = subprocess.run(["git", "ls-files", "crates"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    untracked = [str(p.relative_to(ROOT)) for p in (ROOT / "crates").rglob("*.rs")]
    needed = [p for p in tracked + untracked if not fnmatch.fnmatch(p, "*.md")]
    assert needed and not [p for p in needed if ignored(p)]
    for heavy in ("target", "target/release/x0tta6bl4", ".git", "deploy/helm/x0tta6bl4/Chart.yaml"):
        assert ignored(heavy), heavy
