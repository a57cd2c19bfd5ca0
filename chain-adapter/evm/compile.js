// Compiles the contracts with the pinned solcjs and writes one artifact per contract
// (ABI, creation bytecode, compiler settings) to artifacts/. With --check, compiles and fails
// if the committed artifacts differ: CI runs it, so the artifacts are always the source's.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const here = __dirname;
const sources = ["GridchanAdjudicator.sol", "TestToken.sol"];
const settings = {
  optimizer: { enabled: true, runs: 200 },
  viaIR: true,
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const input = {
  language: "Solidity",
  sources: Object.fromEntries(
    sources.map((f) => [f, { content: fs.readFileSync(path.join(here, "contracts", f), "utf8") }]),
  ),
  settings,
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

const check = process.argv.includes("--check");
let differ = 0;
for (const file of sources) {
  for (const [name, c] of Object.entries(output.contracts[file])) {
    if (c.evm.bytecode.object === "") continue; // an interface
    const artifact = {
      contractName: name,
      source: `contracts/${file}`,
      compiler: `solc ${solc.version()}`,
      settings: { optimizer: settings.optimizer, viaIR: settings.viaIR, evmVersion: settings.evmVersion },
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
    };
    const text = JSON.stringify(artifact, null, 2) + "\n";
    const out = path.join(here, "artifacts", `${name}.json`);
    if (check) {
      const committed = fs.existsSync(out) ? fs.readFileSync(out, "utf8") : "";
      if (committed !== text) {
        console.error(`${out} differs from what ${file} compiles to: run \`npm run compile\` in chain-adapter/evm and commit the result`);
        differ += 1;
      }
    } else {
      fs.mkdirSync(path.dirname(out), { recursive: true });
      fs.writeFileSync(out, text);
      console.log(`wrote ${path.relative(process.cwd(), out)} (${(artifact.deployedBytecode.length - 2) / 2} bytes deployed)`);
    }
  }
}
if (differ > 0) process.exit(1);
if (check) console.log("artifacts match the sources");
