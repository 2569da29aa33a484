// The library's first import: on an older Node it throws one clear error before the modules that need a newer one run.
import { nodeVersionProblem } from "./node-version.js";

const problem = nodeVersionProblem();
if (problem) throw new Error(problem);
