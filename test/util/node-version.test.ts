// The Node version check that runs before the CLI and the library load anything else.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { nodeVersionProblem } from "../../src/node-version.js";

describe("node version check", () => {
  it("accepts 20.15 and newer, refuses older with the version and what to do", () => {
    for (const v of ["20.15.0", "20.20.2", "21.0.0", "22.1.0", "24.3.1"])
      assert.equal(nodeVersionProblem(v), undefined, v);
    for (const v of ["18.20.4", "20.14.0", "20.10.0", "16.0.0"]) {
      const problem = nodeVersionProblem(v);
      assert.match(
        problem ?? "",
        new RegExp(`needs Node.js 20.15 or newer; this is Node.js ${v.replaceAll(".", "\\.")}`),
        v,
      );
      assert.match(problem ?? "", /Install a current Node\.js/);
    }
  });
});
