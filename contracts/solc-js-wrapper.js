#!/usr/bin/env node
// A `solc` command line for tools that expect the native compiler (Slither, through
// crytic-compile's solc_standard_json platform), backed by the pinned solc-js of
// contracts/package.json, so the audit sees exactly the compiler that built contracts/out.
//
// It answers the two invocations those tools make:
//   solc-js-wrapper.js --version
//   solc-js-wrapper.js --standard-json [--allow-paths P] [--base-path P] < input.json
// Imports are resolved relative to the working directory, then in contracts/node_modules
// (@openzeppelin/contracts), then in contracts/. Anything else exits 2 with a usage line.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const args = process.argv.slice(2);
const root = __dirname;

if (args.includes("--version")) {
  // The format of the native compiler, which crytic-compile parses for \d+.\d+.\d+.
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}

if (!args.includes("--standard-json")) {
  process.stderr.write(
    `solc-js-wrapper: unsupported arguments ${JSON.stringify(args)}; ` +
      "only --version and --standard-json (input on stdin) are implemented\n",
  );
  process.exit(2);
}

const basePathIndex = args.indexOf("--base-path");
const basePath = basePathIndex >= 0 ? args[basePathIndex + 1] : process.cwd();

function findImports(importPath) {
  const candidates = [
    path.resolve(basePath, importPath),
    path.join(root, "node_modules", importPath),
    path.join(root, importPath),
  ];
  for (const candidate of candidates) {
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  }
  return { error: `import not found: ${importPath} (run scripts/build-contracts.sh)` };
}

const input = fs.readFileSync(0, "utf8");
process.stdout.write(solc.compile(input, { import: findImports }));
