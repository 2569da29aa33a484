// Fuzz: tokenizer_config.json (and the added tokens of tokenizer.json) through the bounded loader, the schema and the
// tokenizer library gives a working tokenizer or a clean LayerwiseError, never another exception.
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { ChatTemplate } from "../../src/model/chat-template.js";
import { TextTokenizer } from "../../src/model/tokenizer.js";
import { storiesCopy, tinyModel } from "../helpers.js";
import { assertHeapBounded, awkwardJson, cleanOutcome, fuzz, jsonText, prototypeKey } from "./fuzz-values.js";

/** Keys the loader, the library or the chat template read, and some they do not. */
const configKeys = fc.oneof(
  fc.constantFrom(
    "chat_template",
    "bos_token",
    "eos_token",
    "add_bos_token",
    "add_eos_token",
    "additional_special_tokens",
    "clean_up_tokenization_spaces",
    "remove_space",
    "do_lowercase_and_remove_accent",
    "added_tokens_decoder",
    "model_max_length",
    "unk_token",
    "pad_token",
    "legacy",
  ),
  prototypeKey,
  fc.string({ maxLength: 8 }),
);

/** Template text: real Jinja pieces shuffled, so the parser sees near-valid templates as well as garbage. */
const templateText = fc
  .array(
    fc.constantFrom(
      "{% for m in messages %}",
      "{% endfor %}",
      "{{ m.content }}",
      "{% if add_generation_prompt %}",
      "{% endif %}",
      "{{",
      "}}",
      "{%",
      "%}",
      "<|im_start|>",
      "(",
      ")",
      "[",
      "]",
      "'",
      "x",
      " ",
      "\n",
      "|trim",
      "{# c #}",
      "{% set x = 1 %}",
    ),
    { maxLength: 30 },
  )
  .map((parts) => parts.join(""));

const configValue = fc.oneof(
  awkwardJson,
  templateText,
  fc.array(
    fc.record(
      {
        name: fc.oneof(fc.constantFrom("default", "tool_use"), fc.string({ maxLength: 4 })),
        template: fc.oneof(templateText, awkwardJson),
      },
      { requiredKeys: [] },
    ),
    { maxLength: 3 },
  ),
  fc.record({ content: fc.oneof(fc.string({ maxLength: 8 }), awkwardJson) }, { requiredKeys: [] }),
);

async function loadAndUse(dir: string): Promise<void> {
  const t = await cleanOutcome(() => TextTokenizer.load(dir, { vocabSize: 1024 }));
  if (!t) return;
  // A tokenizer that loaded works: encoding, decoding and its special tokens raise nothing.
  const ids = t.encode("Hello world, héllo 日本 😀");
  t.decode(ids);
  t.specialToken("bos_token");
  t.specialToken("eos_token");
  await cleanOutcome(() => ChatTemplate.load(dir, t.config));
}

// Made at the top level: the temp folders then live until the file's last test ends.
const folders: { dir: string; config: string; tokenizer: string }[] = [];
for (const dir of [
  await storiesCopy(),
  await tinyModel({ preset: "tiny-llama", layers: 1 }),
  await tinyModel({ preset: "tiny-gpt-oss", layers: 1 }),
  await tinyModel({ preset: "tiny-gemma3", layers: 1 }),
]) {
  folders.push({
    dir,
    config: await readFile(join(dir, "tokenizer_config.json"), "utf8"),
    tokenizer: await readFile(join(dir, "tokenizer.json"), "utf8"),
  });
}

describe("fuzz: tokenizer_config.json", () => {
  it("real tokenizer_config.json files with fields changed, removed or added", { timeout: 300_000 }, async () => {
    await fuzz(
      fc.asyncProperty(
        fc.nat(),
        fc.array(fc.record({ key: configKeys, value: configValue, remove: fc.boolean() }), {
          minLength: 1,
          maxLength: 4,
        }),
        async (pick, edits) => {
          const f = folders[pick % folders.length]!;
          const config = JSON.parse(f.config) as Record<string, unknown>;
          for (const e of edits) {
            if (e.remove) delete config[e.key];
            else
              Object.defineProperty(config, e.key, {
                value: e.value,
                enumerable: true,
                writable: true,
                configurable: true,
              }); // "__proto__" as a key, as JSON.parse makes it
          }
          await writeFile(join(f.dir, "tokenizer_config.json"), jsonText(config));
          await loadAndUse(f.dir);
        },
      ),
    );
    assertHeapBounded();
  });

  it("tokenizer_config.json and chat_template.jinja of any text", { timeout: 300_000 }, async () => {
    await fuzz(
      fc.asyncProperty(
        fc.nat(),
        fc.oneof(fc.string({ maxLength: 40 }), awkwardJson.map(jsonText), templateText),
        fc.option(templateText),
        async (pick, configText, jinja) => {
          const f = folders[pick % folders.length]!;
          await writeFile(join(f.dir, "tokenizer_config.json"), configText);
          if (jinja === null) await rm(join(f.dir, "chat_template.jinja"), { force: true });
          else await writeFile(join(f.dir, "chat_template.jinja"), jinja);
          await loadAndUse(f.dir);
        },
      ),
    );
    await Promise.all(folders.map((f) => rm(join(f.dir, "chat_template.jinja"), { force: true })));
    assertHeapBounded();
  });

  it("tokenizer.json with its added tokens or vocabulary changed", { timeout: 300_000 }, async () => {
    const field = fc.constantFrom("id", "content", "special", "whole", "vocab-entry", "vocab", "added_tokens");
    await fuzz(
      fc.asyncProperty(fc.nat(), fc.nat(), field, awkwardJson, async (pick, index, key, value) => {
        const f = folders[pick % folders.length]!;
        await writeFile(join(f.dir, "tokenizer_config.json"), f.config);
        const json = JSON.parse(f.tokenizer) as {
          added_tokens: Record<string, unknown>[];
          model: { vocab: Record<string, unknown> };
        } & Record<string, unknown>;
        const token = json.added_tokens[index % json.added_tokens.length]!;
        if (key === "whole") json.added_tokens[index % json.added_tokens.length] = value as Record<string, unknown>;
        else if (key === "vocab-entry")
          json.model.vocab[Object.keys(json.model.vocab)[index % Object.keys(json.model.vocab).length]!] = value;
        else if (key === "vocab") json.model.vocab = value as Record<string, unknown>;
        else if (key === "added_tokens") json.added_tokens = value as Record<string, unknown>[];
        else token[key] = value;
        await writeFile(join(f.dir, "tokenizer.json"), jsonText(json));
        await loadAndUse(f.dir);
      }),
    );
    await Promise.all(folders.map((f) => writeFile(join(f.dir, "tokenizer.json"), f.tokenizer)));
    assertHeapBounded();
  });
});
