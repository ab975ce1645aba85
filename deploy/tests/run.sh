#!/usr/bin/env bash
# The deploy tests: Prometheus rules (promtool), then pytest on deploy/tests (dashboards
# and rules against a live node, a live Prometheus over a real mesh, the Helm chart, the
# Chaos Mesh experiments, the Dockerfile, the workflows, the runbook).
#
# Installs what it needs when missing (Debian: prometheus, for promtool and the server;
# dnsmasq-base, the cluster DNS server of the peer-name TTL test;
# PyPI: helm-python-sdk, kubernetes-validate, pyyaml, pytest, spiffe) and builds the release
# binary (X0TTA6BL4_BIN=PATH uses another). Safe to rerun; offline once installed.
# Extra arguments go to pytest, e.g. `deploy/tests/run.sh -k helm`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

APT_PACKAGES=(prometheus podman dnsmasq-base) # podman: test_image.py builds the Containerfile image; dnsmasq: test_day_two.py's cluster DNS
PIP_PACKAGES=(helm-python-sdk kubernetes-validate pyyaml pytest spiffe) # spiffe: py-spiffe, test_workload_api.py

missing_apt=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing_apt+=("$package")
done
if ((${#missing_apt[@]} > 0)); then
    echo "installing Debian packages: ${missing_apt[*]}"
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing_apt[@]}"
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "deploy tests: need Python 3.11 or newer (tomllib), found $(python3 --version)" >&2; exit 1; }
missing_pip=()
for package in "${PIP_PACKAGES[@]}"; do
    python3 -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$package" 2>/dev/null \
        || missing_pip+=("$package")
done
if ((${#missing_pip[@]} > 0)); then
    echo "installing PyPI packages: ${missing_pip[*]}"
    python3 -m pip install --quiet "${missing_pip[@]}" \
        || python3 -m pip install --quiet --break-system-packages "${missing_pip[@]}"
fi

if [[ -z ${X0TTA6BL4_BIN:-} ]]; then
    echo "== cargo build --release -p x0tta6bl4-cli"
    cargo build --release --quiet -p x0tta6bl4-cli
fi

echo "== promtool check rules"
promtool check rules deploy/monitoring/prometheus/x0tta6bl4-rules.yml
echo "== promtool test rules"
(cd deploy/monitoring/prometheus && promtool test rules x0tta6bl4-rules.test.yml)

echo "== pytest deploy/tests"
exec python3 -m pytest -p no:cacheprovider -q deploy/tests "$@"
