"""The small image (Containerfile, FROM scratch) is built with podman, its root filesystem
is exported, and a 3-node mesh runs from it: the chaos lab starts every node as
`chroot ROOT /usr/local/bin/x0tta6bl4 node ...` in its own network namespace, kills one
and checks that the other two still reach each other and that routes recompute.

Containers cannot start here (no Docker engine; podman's runtime is refused setrlimit),
so the image's content is run from its exported root filesystem instead: the same files,
the same binary, the same dynamic loader and libraries, nothing from the host.

Needs root (namespaces, chroot), podman, ip and nft. Under CI=true a missing
prerequisite fails the test; elsewhere it skips with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from support import ROOT, binary

BUILD = ROOT / "deploy" / "image" / "build.sh"
TAG = "localhost/x0tta6bl4:test"


def require(condition: bool, why: str) -> None:
    """Fail under CI=true, skip elsewhere, when a prerequisite is missing."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"prerequisite missing under CI=true: {why}")
    pytest.skip(why)


def prerequisites() -> None:
    require(os.geteuid() == 0, "needs root (network namespaces, chroot): run as root or with sudo -E")
    for tool, package in (("podman", "podman"), ("ip", "iproute2"), ("nft", "nftables"),
                          ("chroot", "coreutils"), ("strip", "binutils")):
        require(shutil.which(tool) is not None, f"`{tool}` is missing: apt-get install -y {package}")


class Image:
    """The built image in a throw-away podman store, and its exported root filesystem."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.podman = ["podman", "--root", str(directory / "store"), "--runroot", str(directory / "run"),
                       "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        self.root = directory / "rootfs"

    def build(self) -> str:
        env = {**os.environ, "X0TTA6BL4_BIN": str(binary()), "PODMAN": " ".join(self.podman)}
        result = subprocess.run([str(BUILD), "--tag", TAG], capture_output=True, text=True, env=env,
                                timeout=300)
        assert result.returncode == 0, f"deploy/image/build.sh failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout.strip().splitlines()[-1]

    def inspect(self) -> dict:
        out = subprocess.run([*self.podman, "image", "inspect", TAG], capture_output=True, text=True,
                             check=True).stdout
        return json.loads(out)[0]

    def export(self) -> None:
        """`podman create` (nothing starts) then `podman export`, untarred into rootfs/."""
        container = subprocess.run([*self.podman, "create", TAG], capture_output=True, text=True,
                                   check=True).stdout.strip()
        archive = self.directory / "rootfs.tar"
        try:
            subprocess.run([*self.podman, "export", "--output", str(archive), container], check=True,
                           capture_output=True)
        finally:
            subprocess.run([*self.podman, "rm", container], capture_output=True)
        self.root.mkdir()
        with tarfile.open(archive) as tar:
            tar.extractall(self.root, filter="fully_trusted")
        archive.unlink()

    def saved_size(self) -> int:
        """Bytes of `podman save` (an OCI archive: what a registry push would carry)."""
        archive = self.directory / "image.tar"
        subprocess.run([*self.podman, "save", "--format", "oci-archive", "--output", str(archive), TAG],
                       check=True, capture_output=True)
        size = archive.stat().st_size
        archive.unlink()
        return size


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    prerequisites()
    built = Image(tmp_path_factory.mktemp("image"))
    built.image_id = built.build()
    built.export()
    yield built
    subprocess.run([*built.podman, "rmi", "--force", TAG], capture_output=True)
    shutil.rmtree(built.directory, ignore_errors=True)


def test_image_is_the_binary_on_scratch(image):
    config = image.inspect()
    assert config["Id"].startswith(image.image_id) or image.image_id.startswith(config["Id"][:12])
    assert config["Config"]["User"] == "10001:10001"
    assert config["Config"]["Entrypoint"] == ["x0tta6bl4"]
    assert config["Config"]["Cmd"] == ["node", "--config", "/etc/x0tta6bl4/node.toml"]
    assert set(config["Config"]["ExposedPorts"]) == {"7001/udp", "8001/tcp"}
    assert config["Config"]["Labels"]["org.opencontainers.image.version"] == \
        subprocess.run([str(binary()), "--version"], capture_output=True, text=True).stdout.split()[-1]
    files = sorted(str(p.relative_to(image.root)) for p in image.root.rglob("*") if not p.is_dir())
    # Nothing but the binary, the loader and libraries, /etc and the example config.
    assert "usr/local/bin/x0tta6bl4" in files
    assert not [f for f in files if f.startswith(("bin/", "sbin/", "usr/bin/"))], files
    libraries = [f for f in files if ".so" in f]
    assert 2 <= len(libraries) <= 6, libraries
    size = image.inspect()["Size"]
    saved = image.saved_size()
    print(f"\nimage {TAG}: {size} bytes uncompressed ({size / 1e6:.1f} MB), "
          f"podman save --format oci-archive: {saved} bytes ({saved / 1e6:.1f} MB); files: {files}")
    # The target: a stripped binary on a minimal base, well under debian-slim's.
    assert size < 60_000_000, size
    # The image's own loader and libraries run its binary: nothing from the host.
    result = subprocess.run([shutil.which("chroot"), "--userspec=10001:10001", str(image.root), "x0tta6bl4", "--version"],
                            capture_output=True, text=True, env={"PATH": "/usr/local/bin"}, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("x0tta6bl4 "), result


def node_roots(root: Path) -> set[int]:
    """PIDs of `x0tta6bl4 node` processes whose root directory is `root`."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(os.readlink(proc / "root")) == root.resolve() and \
                    b"node" in (proc / "cmdline").read_bytes().split(b"\0"):
                found.add(int(proc.name))
        except OSError:
            continue
    return found


def lab_from_image(image, scenario: str) -> tuple[dict, set[int]]:
    """`lab run` on a ring of 3 with every node chrooted to the image's root filesystem:
    its report and the PIDs of node processes seen running in that root."""
    command = [str(binary()), "lab", "run", "--topology", "ring", "--nodes", "3", "--scenario", scenario,
               "--iterations", "2", "--seed", "1", "--node-root", str(image.root), "--json"]
    seen: set[int] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.update(node_roots(image.root))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    finally:
        done.set()
        watcher.join()
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{result.stderr}"
    report = json.loads(result.stdout)
    x0 = report["routers"]["x0tta6bl4"]
    print(f"\nlab run --scenario {scenario} from the image's root filesystem: mttr_ms "
          f"{json.dumps(x0['mttr_ms'])}, false downs {x0['false_down_events']}, "
          f"node processes seen in the chroot: {len(seen)}")
    assert report["nodes"] == 3
    assert x0["unreachable_pairs_after_heal"] == 0 and x0.get("unhealed_flows", 0) == 0, x0
    # The lab removed its files from the root filesystem.
    assert list((image.root / "tmp").iterdir()) == []
    return x0, seen


def test_three_nodes_from_the_image_survive_a_node_kill(image):
    # A ring of 3 is a triangle: killed, a node's two neighbours keep their direct link;
    # the lab checks every pair is reachable again after the node is back.
    _, seen = lab_from_image(image, "node-kill")
    # Three nodes, and the killed node restarted: all chrooted to the image.
    assert len(seen) >= 4, seen


def test_three_nodes_from_the_image_reroute_around_a_cut_link(image):
    # A link of the triangle goes down: its two ends' flows must move to the two-hop path
    # through the third node (routes recomputed), measured as MTTR samples.
    x0, seen = lab_from_image(image, "link-down")
    assert len(seen) >= 3, seen
    assert x0["mttr_ms"]["samples"] >= 2, x0
    assert x0["mttr_ms"]["max"] > 0, x0
