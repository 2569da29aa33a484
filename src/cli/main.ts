#!/usr/bin/env node
// The `layerwise` command. Checks the Node version before loading the rest, which an older Node could not even link.
import { nodeVersionProblem } from "../node-version.js";

const problem = nodeVersionProblem();
if (problem) {
  process.stderr.write(`error [NODE_TOO_OLD]: ${problem}\n`);
  process.exit(1);
}
await import("./program.js");
