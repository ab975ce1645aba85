#!/usr/bin/env bash
# Build the governance contracts: install the pinned solc-js, OpenZeppelin Contracts and
# Foundry's anvil (the devnet of the deployment tests) from contracts/package-lock.json
# (npm ci; skipped when node_modules already matches the lock, so a rerun works offline),
# then compile contracts/src/*.sol into contracts/out/<Name>.json (abi, bytecode,
# deployedBytecode) and write the compiler's standard-JSON input to
# contracts/out/standard-input.json (the Slither audit compiles it again through
# contracts/solc-js-wrapper.js). The Rust tests in crates/dao execute these artifacts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../contracts"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "build-contracts: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
if ! cmp -s package-lock.json node_modules/.package-lock.json 2>/dev/null \
    && ! node -e 'const a=require("./package-lock.json").packages,b=require("./node_modules/.package-lock.json").packages;for(const k of Object.keys(a)){if(k&&(!b[k]||b[k].version!==a[k].version))process.exit(1)}' 2>/dev/null; then
    echo "build-contracts: npm ci (solc-js and @openzeppelin/contracts, pinned by package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error
fi
node compile.js
