#!/usr/bin/env bash
# Install Mythril (PyPI `mythril`, pinned) into its own virtual environment,
# ~/.cache/x0tta6bl4/mythril-venv (or $X0TTA6BL4_MYTHRIL_VENV), for crates/dao's audit test.
#
# Why a venv and not scripts/test.sh's PIP_PACKAGES: mythril 0.24.8 pins old Ethereum
# libraries (eth-abi<5, eth-hash<0.4, hexbytes<0.3, rlp<4, pyparsing<3, MarkupSafe<2.1,
# coverage<7) that conflict with slither-analyzer's (web3 7: eth-abi 6, hexbytes 2) and
# would downgrade packages other tests use; pip cannot resolve both in one environment.
# Skipped when the venv already has this version, so a rerun works offline.
set -euo pipefail
VERSION=0.24.8
VENV=${X0TTA6BL4_MYTHRIL_VENV:-$HOME/.cache/x0tta6bl4/mythril-venv}
if [[ -x $VENV/bin/myth ]] \
    && [[ $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("mythril"))' 2>/dev/null) == "$VERSION" ]]; then
    exit 0
fi
echo "install-mythril: mythril $VERSION into $VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "mythril==$VERSION"
"$VENV/bin/myth" version
