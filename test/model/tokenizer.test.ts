// tokenizer.json loading (both merge encodings), streaming detokenization, chat templates.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { LayerwiseModel } from "../../src/engine/model.js";
import { CheckpointError } from "../../src/errors.js";
import { ChatTemplate } from "../../src/model/chat-template.js";
import { StreamingDetokenizer, TextTokenizer } from "../../src/model/tokenizer.js";
import { storiesCopy, tinyModel } from "../helpers.js";

const samples = [
  "Once upon a time, there was a little girl named Lily.",
  "héllo wörld, naïve café; 日本語のテキスト and emoji 😀👍🏽 done",
  "  leading spaces, tabs\tand\nnew lines\n\n",
  "numbers 1234567 and symbols #$%&*()[]{}<>",
];

describe("tokenizer", () => {
  it("stories260K encodes as its README says", async () => {
    const t = await TextTokenizer.load(await storiesCopy());
    assert.deepEqual(t.encode("Once upon a time"), [1, 403, 407, 261, 378]);
    assert.deepEqual(t.encode("Once upon a time, there was"), [1, 403, 407, 261, 378, 432, 383, 286]);
  });

  it("accepts merges as arrays and as 'a b' strings with identical results", async () => {
    const dir = await storiesCopy();
    const arrays = await TextTokenizer.load(dir);
    const json = JSON.parse(await readFile(join(dir, "tokenizer.json"), "utf8"));
    assert.ok(Array.isArray(json.model.merges[0]), "stories260K ships array merges");
    json.model.merges = json.model.merges.map((m: string[]) => m.join(" "));
    await writeFile(join(dir, "tokenizer.json"), JSON.stringify(json));
    const strings = await TextTokenizer.load(dir);
    for (const s of samples) assert.deepEqual(strings.encode(s), arrays.encode(s), s);

    const a = await TextTokenizer.load(await tinyModel({ preset: "tiny-llama", layers: 1, mergeFormat: "arrays" }));
    const b = await TextTokenizer.load(await tinyModel({ preset: "tiny-llama", layers: 1, mergeFormat: "strings" }));
    for (const s of samples) {
      assert.deepEqual(b.encode(s), a.encode(s), s);
      assert.equal(a.decode(a.encode(s)), s);
    }
  });

  for (const kind of ["stories260K (byte fallback)", "tiny-llama (byte-level BPE)"]) {
    it(`streams text without ever splitting a character: ${kind}`, async () => {
      const dir = kind.startsWith("stories")
        ? await storiesCopy()
        : await tinyModel({ preset: "tiny-llama", layers: 1 });
      const t = await TextTokenizer.load(dir);
      for (const s of samples) {
        const ids = t.encode(s, false);
        const detok = new StreamingDetokenizer(t);
        const pieces = ids.map((id) => detok.push(id));
        pieces.push(detok.flush());
        for (const p of pieces) assert.ok(!p.includes("\uFFFD"), `piece ${JSON.stringify(p)} splits a character`);
        assert.equal(pieces.join(""), t.decode(ids));
        assert.ok(pieces.filter((p) => p.length > 0).length > 1, "text came out in pieces, not all at the end");
      }
    });
  }

  it("streams a continuation with the space before its first word (prompt ids as context)", async () => {
    const t = await TextTokenizer.load(await storiesCopy());
    const prompt = t.encode("Once upon a time, there was a little dog");
    const continuation = t.encode("Once upon a time, there was a little dog named Max.").slice(prompt.length);
    const detok = new StreamingDetokenizer(t, prompt);
    const text = continuation.map((id) => detok.push(id)).join("") + detok.flush();
    assert.equal(text, " named Max.");
    const bare = new StreamingDetokenizer(t);
    assert.equal(
      continuation.map((id) => bare.push(id)).join("") + bare.flush(),
      "named Max.",
      "without context the decoder strips the space",
    );
  });

  it("renders the model's chat template", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 1 });
    const t = await TextTokenizer.load(dir);
    const template = await ChatTemplate.load(dir, t.config);
    assert.ok(template);
    const text = template.render([{ role: "user", content: "Hi there" }], { bos_token: t.specialToken("bos_token") });
    assert.equal(
      text,
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    );
    const ids = t.encode(text, false);
    assert.equal(ids[0], t.tokenId("<|begin_of_text|>"));
    assert.equal(ids.filter((id) => id === t.tokenId("<|eot_id|>")).length, 1);
  });

  it("reads chat_template.jinja when the folder has one", async () => {
    const dir = await storiesCopy();
    await writeFile(
      join(dir, "chat_template.jinja"),
      "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant]",
    );
    const t = await TextTokenizer.load(dir);
    const template = await ChatTemplate.load(dir, t.config);
    assert.equal(template?.render([{ role: "user", content: "hello" }], {}), "[user] hello\n[assistant]");
  });
});

describe("tokenizer files that do not fit the model", () => {
  const load = (dir: string) => LayerwiseModel.load(dir, { backend: "cpu" });
  const editJson = async (file: string, edit: (j: Record<string, unknown>) => void) => {
    const json = JSON.parse(await readFile(file, "utf8"));
    edit(json);
    await writeFile(file, JSON.stringify(json));
  };
  const rejects = (p: Promise<unknown>, code: string, message: RegExp) =>
    assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof CheckpointError, `not a CheckpointError: ${(e as Error)?.stack ?? e}`);
      assert.equal(e.code, code, e.message);
      assert.match(e.message, message);
      return true;
    });

  for (const value of [42, { template: "x" }, [1, 2], [{ name: "default" }], null]) {
    it(`chat_template ${JSON.stringify(value)} is a clean error, not a bug`, async () => {
      const dir = await storiesCopy();
      await editJson(join(dir, "tokenizer_config.json"), (j) => (j.chat_template = value));
      if (value === null) {
        const m = await load(dir); // null: no template, as transformers reads it
        assert.equal(m.chatTemplate, undefined);
        await m.close();
        return;
      }
      await rejects(
        load(dir),
        "TOKENIZER_CONFIG_INVALID",
        /tokenizer_config\.json: chat_template: must be a string or a list of \{name, template\}/,
      );
    });
  }

  it("chat_template as a list of named templates uses the one named default", async () => {
    const dir = await storiesCopy();
    await editJson(join(dir, "tokenizer_config.json"), (j) => {
      j.chat_template = [
        { name: "tool_use", template: "TOOLS" },
        { name: "default", template: "{% for m in messages %}<{{ m.content }}>{% endfor %}" },
      ];
    });
    const t = await TextTokenizer.load(dir);
    const template = await ChatTemplate.load(dir, t.config);
    assert.equal(template?.render([{ role: "user", content: "hi" }], {}), "<hi>");
  });

  it("bos_token and eos_token of the wrong type are named", async () => {
    const dir = await storiesCopy();
    await editJson(join(dir, "tokenizer_config.json"), (j) => (j.eos_token = 7));
    await rejects(load(dir), "TOKENIZER_CONFIG_INVALID", /eos_token/);
  });

  it("a tokenizer with ids beyond the embedding is refused at load, naming both numbers", async () => {
    const dir = await storiesCopy();
    await editJson(join(dir, "tokenizer.json"), (j) => {
      (j.added_tokens as unknown[]).push({
        id: 100000,
        content: "<big>",
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      });
    });
    await rejects(
      load(dir),
      "TOKENIZER_VOCAB_MISMATCH",
      /tokenizer\.json has token id 100000 \("<big>"\), but config\.json's vocab_size is 512/,
    );
  });

  it("a tokenizer.json of the wrong structure is TOKENIZER_INVALID", async () => {
    for (const edit of [
      (j: Record<string, unknown>) => (j.added_tokens = 5),
      (j: Record<string, unknown>) => (j.added_tokens = [{ id: "x" }]),
      (j: Record<string, unknown>) => (j.model = null),
    ]) {
      const dir = await storiesCopy();
      await editJson(join(dir, "tokenizer.json"), edit);
      await rejects(TextTokenizer.load(dir), "TOKENIZER_INVALID", /tokenizer\.json/);
    }
  });
});
