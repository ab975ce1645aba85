#!/usr/bin/env bash
# Build the small x0tta6bl4 image (Containerfile at the repository's root) offline with
# podman: assemble its context from a built binary, then `podman build`.
#
#   deploy/image/build.sh [--tag NAME:TAG] [--context DIR]
#
# X0TTA6BL4_BIN  the binary (default target/release/x0tta6bl4; build it first with
#                `cargo build --release -p x0tta6bl4-cli`). It is stripped into the image.
# PODMAN         the podman command with global options (default `podman`), e.g.
#                "podman --root /tmp/store --storage-driver vfs" for a throw-away store.
# --context DIR  keep the assembled context in DIR (default: a temporary directory).
#
# The binary is a dynamically linked glibc build: the image gets exactly the libraries
# `ldd` lists (ld.so, libc, libm, libgcc_s), copied from this machine, so build on the
# glibc the binary was linked against (Debian bookworm in CI and in the Dockerfile).
# Prints the image's ID on the last line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tag="x0tta6bl4:$version"
context=""
while (($# > 0)); do
    case $1 in
        --tag) tag=${2:?--tag needs NAME:TAG}; shift 2 ;;
        --context) context=${2:?--context needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "x0tta6bl4: unknown argument $1 (deploy/image/build.sh): see --help" >&2; exit 2 ;;
    esac
done
binary=${X0TTA6BL4_BIN:-target/release/x0tta6bl4}
if [[ ! -x $binary ]]; then
    echo "x0tta6bl4: no binary at $binary (deploy/image/build.sh): run \`cargo build --release -p x0tta6bl4-cli\` or set X0TTA6BL4_BIN" >&2
    exit 2
fi
read -r -a podman <<<"${PODMAN:-podman}"
if ! command -v "${podman[0]}" >/dev/null; then
    echo "x0tta6bl4: ${podman[0]} is not installed (deploy/image/build.sh): apt-get install -y podman" >&2
    exit 2
fi
if [[ -z $context ]]; then
    context=$(mktemp -d)
    trap 'rm -rf "$context"' EXIT
fi

rootfs=$context/rootfs
rm -rf "$rootfs" "$context/svid"
install -d -m 0755 "$rootfs/usr/local/bin" "$rootfs/etc/x0tta6bl4" \
    "$rootfs/usr/share/doc/x0tta6bl4" "$rootfs/var/lib/x0tta6bl4"
install -d -m 1777 "$rootfs/tmp"
install -d -m 0700 "$context/svid"
strip --strip-all -o "$rootfs/usr/local/bin/x0tta6bl4" "$binary"
chmod 0755 "$rootfs/usr/local/bin/x0tta6bl4"
# Every library the dynamic loader resolves, at the path it resolves it to, and the
# loader itself at the path the binary names (PT_INTERP).
while read -r line; do
    path=""
    case $line in
        *"=> /"*) path=${line#*=> }; path=${path%% (*} ;;
        /*) path=${line%% (*} ;;
    esac
    [[ -n $path ]] || continue
    install -D -m 0755 "$(readlink -f "$path")" "$rootfs$path"
done < <(ldd "$binary")
cp examples/node.toml "$rootfs/usr/share/doc/x0tta6bl4/node.example.toml"
printf 'root:x:0:0:root:/root:/sbin/nologin\nx0tta6bl4:x:10001:10001:x0tta6bl4:/nonexistent:/sbin/nologin\n' \
    >"$rootfs/etc/passwd"
printf 'root:x:0:\nx0tta6bl4:x:10001:\n' >"$rootfs/etc/group"
# The CA service's name (`ca_server`) resolves through glibc: /etc/hosts, then DNS; glibc
# 2.34+ has both modules inside libc.so.6, so no libnss_*.so is needed. Peer names the
# node resolves itself, in the same order (crates/node/src/peer_names.rs).
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$rootfs/etc/hosts"
cp Containerfile "$context/Containerfile"

"${podman[@]}" build --quiet --build-arg "VERSION=$version" --tag "$tag" \
    --file "$context/Containerfile" "$context"
