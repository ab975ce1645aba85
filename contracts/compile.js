#!/usr/bin/env node
// Compiles contracts/src/*.sol with the pinned solc-js (no network: the compiler is the npm
// package itself) through the standard-JSON interface, and writes one
// contracts/out/<Contract>.json per contract with its abi, bytecode and deployedBytecode.
// Any compiler error (or warning) fails the build. The standard-JSON input itself goes to
// contracts/out/standard-input.json, which the Slither audit compiles again through
// solc-js-wrapper.js.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const root = __dirname;
const srcDir = path.join(root, "src");
const outDir = path.join(root, "out");
const sources = {};
for (const file of fs.readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort()) {
  sources[`src/${file}`] = { content: fs.readFileSync(path.join(srcDir, file), "utf8") };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: {
      "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "evm.methodIdentifiers"] },
    },
  },
};

function findImports(importPath) {
  const candidates = [path.join(root, "node_modules", importPath), path.join(root, importPath)];
  for (const candidate of candidates) {
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  }
  return { error: `import not found: ${importPath} (run npm ci in contracts/)` };
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
// The same input for the static audit (Slither reads it through solc-js-wrapper.js).
fs.mkdirSync(outDir, { recursive: true });
// Without outputSelection: crytic-compile asks for what it needs (AST, source maps).
const auditInput = { ...input, settings: { ...input.settings } };
delete auditInput.settings.outputSelection;
fs.writeFileSync(path.join(outDir, "standard-input.json"), JSON.stringify(auditInput, null, 2) + "\n");
const problems = (output.errors || []).filter((e) => e.severity !== "info");
for (const e of problems) console.error(e.formattedMessage || e.message);
if (problems.some((e) => e.severity === "error") || problems.length > 0) {
  console.error(`solc ${solc.version()}: ${problems.length} problem(s); nothing written`);
  process.exit(1);
}

let count = 0;
for (const [file, contracts] of Object.entries(output.contracts)) {
  if (!file.startsWith("src/")) continue;
  for (const [name, c] of Object.entries(contracts)) {
    if (!c.evm.bytecode.object) continue; // abstract contracts and interfaces
    const artifact = {
      contractName: name,
      sourceName: file,
      compiler: `solc-js ${solc.version()}`,
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      methodIdentifiers: c.evm.methodIdentifiers,
    };
    const tmp = path.join(outDir, `.${name}.json.tmp`);
    fs.writeFileSync(tmp, JSON.stringify(artifact, null, 2) + "\n");
    fs.renameSync(tmp, path.join(outDir, `${name}.json`));
    const size = c.evm.deployedBytecode.object.length / 2;
    console.log(`${name}: ${size} bytes of runtime code${size > 24576 ? " (OVER the EIP-170 limit)" : ""}`);
    if (size > 24576) process.exit(1);
    count += 1;
  }
}
console.log(`solc ${solc.version()}: ${count} contracts written to contracts/out/`);
