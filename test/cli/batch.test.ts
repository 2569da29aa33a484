// `layerwise batch`: results survive a SIGKILL, a rerun finishes the rest, every id ends up exactly once.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFile, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { cliPath, runCli, tempDir, tinyModel } from "../helpers.js";

async function results(file: string): Promise<Map<string, string>> {
  const lines = (await readFile(file, "utf8")).split("\n").filter(Boolean);
  const byId = new Map<string, string>();
  for (const line of lines) {
    const r = JSON.parse(line) as { id: string; text: string };
    assert.ok(!byId.has(r.id), `id ${r.id} appears twice`);
    byId.set(r.id, r.text);
  }
  return byId;
}

describe("layerwise batch", () => {
  it("killed mid-way then rerun: every id exactly once, same results as an uninterrupted run", async () => {
    const model = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const dir = await tempDir();
    const jobs = join(dir, "jobs.jsonl");
    const n = 40;
    await writeFile(
      jobs,
      Array.from({ length: n }, (_, i) =>
        JSON.stringify({
          id: `job-${i}`,
          prompt: `question ${i} about the long document`,
          max_tokens: 60,
          temperature: 0,
        }),
      ).join("\n") + "\n",
    );
    const args = (out: string) => ["batch", model, "--in", jobs, "--out", out, "--batch", "4", "--backend", "cpu"];
    // The prefix cache's scratch folder goes here: a kill leaves it, the next run removes it.
    const tmp = join(dir, "tmp");
    await mkdir(tmp);
    const env = { TMPDIR: tmp };
    const scratchDirs = async () => (await readdir(tmp)).filter((n) => n.startsWith("layerwise-batch-"));
    const clean = join(dir, "clean.jsonl");
    const ok = await runCli(args(clean), { env });
    assert.equal(ok.code, 0, ok.stderr);
    const reference = await results(clean);
    assert.equal(reference.size, n);

    const out = join(dir, "out.jsonl");
    const child = spawn(process.execPath, [cliPath, ...args(out)], {
      stdio: "ignore",
      env: { ...process.env, ...env },
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_c, signal) => resolve(signal)));
    for (;;) {
      const done = await Promise.race([
        exited.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 10)),
      ]);
      assert.ok(!done, "the batch finished before it could be killed");
      const lines = (await readFile(out, "utf8").catch(() => "")).split("\n").filter(Boolean).length;
      if (lines >= 5) break;
    }
    child.kill("SIGKILL");
    assert.equal(await exited, "SIGKILL");
    const partial = await results(out);
    assert.ok(partial.size >= 5 && partial.size < n, `${partial.size} results before the kill`);

    assert.equal((await scratchDirs()).length, 1, "the killed run's scratch KV folder is left");

    const rerun = await runCli(args(out), { env });
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.match(rerun.stderr, new RegExp(`${n} jobs, ${partial.size} already in`));
    assert.deepEqual(await results(out), reference);
    assert.deepEqual(await scratchDirs(), [], "the rerun removed the killed run's scratch folder, and its own");
  });

  it("without a temp folder for the prefix cache the jobs run without it", async () => {
    const model = await tinyModel({ preset: "tiny-llama", layers: 1 });
    const dir = await tempDir();
    const jobs = join(dir, "jobs.jsonl");
    await writeFile(
      jobs,
      '{"id": "a", "prompt": "first", "max_tokens": 3, "temperature": 0}\n{"id": "b", "prompt": "first too", "max_tokens": 3, "temperature": 0}\n',
    );
    const r = await runCli(["batch", model, "--in", jobs, "--out", join(dir, "out.jsonl"), "--backend", "cpu"], {
      env: { TMPDIR: join(dir, "no-such-folder") },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning \[KV_CACHE_DISABLED\]: no temporary folder for the prefix cache/);
    assert.equal((await results(join(dir, "out.jsonl"))).size, 2);
  });

  it("an --out that is not a results file is refused before a byte of it changes", async () => {
    const model = await tinyModel({ preset: "tiny-llama", layers: 1 });
    const dir = await tempDir();
    const jobs = join(dir, "jobs.jsonl");
    await writeFile(jobs, '{"id": "a", "prompt": "first", "max_tokens": 3, "temperature": 0}\n');
    const contents = [
      "my notes\nsecond line\nlast line without newline",
      "one line, no newline",
      '{"id": "a", "prompt": "a job, not a result"}\n',
      '{"id":"a","text":"x","finish_reason":"length"}\nnot json',
    ];
    for (const [i, text] of contents.entries()) {
      const out = join(dir, `notes-${i}.txt`);
      await writeFile(out, text);
      const r = await runCli(["batch", model, "--in", jobs, "--out", out, "--backend", "cpu"]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /error \[OUT_NOT_RESULTS\]/);
      assert.equal(await readFile(out, "utf8"), text, "the file is as it was");
    }
    const same = await runCli(["batch", model, "--in", jobs, "--out", jobs, "--backend", "cpu"]);
    assert.match(same.stderr, /error \[OUT_IS_IN\]/);
    assert.equal(await readFile(jobs, "utf8"), '{"id": "a", "prompt": "first", "max_tokens": 3, "temperature": 0}\n');
  });

  it("a record cut short by a crash is dropped and redone; bad input lines are named", async () => {
    const model = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const dir = await tempDir();
    const jobs = join(dir, "jobs.jsonl");
    await writeFile(
      jobs,
      [
        '{"id": "a", "prompt": "first", "max_tokens": 5, "temperature": 0}',
        '{"id": "b", "messages": [{"role": "user", "content": "second"}], "max_tokens": 5, "temperature": 0}',
      ].join("\n") + "\n",
    );
    const out = join(dir, "out.jsonl");
    await writeFile(out, "");
    assert.equal((await runCli(["batch", model, "--in", jobs, "--out", out, "--backend", "cpu"])).code, 0);
    const complete = await results(out);
    const lines = (await readFile(out, "utf8")).split("\n").filter(Boolean);
    await writeFile(out, `${lines[0]}\n${lines[1]!.slice(0, 15)}`); // the second record was being written when the power went out
    const rerun = await runCli(["batch", model, "--in", jobs, "--out", out, "--backend", "cpu"]);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.deepEqual(await results(out), complete);

    await appendFile(jobs, '{"id": "c", "prompt": "third", "max_tokens": "five"}\n');
    const bad = await runCli(["batch", model, "--in", jobs, "--out", out, "--backend", "cpu"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /error \[BAD_JOB\]: .*jobs\.jsonl:3: max_tokens/);
  });
});
