// The model's chat template (tokenizer_config.json or chat_template.jinja), rendered with @huggingface/jinja.
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { CheckpointError, UsageError } from "../errors.js";
import { readOptionalModelText } from "./model-files.js";
import type { TokenizerConfig } from "./tokenizer.js";

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "developer" | "tool";
  content: string;
}

export class ChatTemplate {
  private constructor(
    private readonly template: Template,
    readonly source: string,
  ) {}

  /**
   * The default template of the folder: chat_template.jinja, else tokenizer_config.json's chat_template (a string, or
   * named templates of which "default" is used); undefined when the model has none (base models).
   */
  static async load(dir: string, config: TokenizerConfig): Promise<ChatTemplate | undefined> {
    let source = join(dir, "chat_template.jinja");
    let text = await readOptionalModelText(source, "chat_template");
    if (text === undefined) {
      source = join(dir, "tokenizer_config.json");
      text = templateOf(config.chat_template, source);
    }
    if (text === undefined) return undefined;
    try {
      return new ChatTemplate(new Template(text), source);
    } catch (e) {
      // Parsing is bounded by the file's size cap; a deeply nested template may still exhaust the stack, and says so here.
      throw new CheckpointError(
        "CHAT_TEMPLATE_INVALID",
        `${source}: the chat template does not parse: ${String((e as Error)?.message ?? e).slice(0, 300)}`,
        "download the model's tokenizer_config.json (or chat_template.jinja) again",
      );
    }
  }

  /** The prompt text for `messages`, ending with the assistant's turn opener. */
  render(
    messages: readonly ChatMessage[],
    specials: { bos_token?: string; eos_token?: string },
    extra: Record<string, unknown> = {},
  ): string {
    try {
      return this.template.render({
        messages,
        add_generation_prompt: true,
        bos_token: specials.bos_token ?? "",
        eos_token: specials.eos_token ?? "",
        ...extra,
      });
    } catch (e) {
      throw new UsageError(
        "CHAT_TEMPLATE_FAILED",
        `${this.source}: the chat template rejected the conversation: ${(e as Error).message}`,
        "check the roles and order of the messages",
      );
    }
  }
}

/** The template text of a tokenizer_config.json chat_template value (callers may pass a config that was never checked). */
function templateOf(value: unknown, source: string): string | undefined {
  if (value === undefined || value === null || typeof value === "string") return value ?? undefined;
  if (
    Array.isArray(value) &&
    value.every(
      (t) => typeof t === "object" && t !== null && typeof t.name === "string" && typeof t.template === "string",
    )
  ) {
    return (value as { name: string; template: string }[]).find((t) => t.name === "default")?.template;
  }
  throw new CheckpointError(
    "TOKENIZER_CONFIG_INVALID",
    `${source}: chat_template: must be a string or a list of {name, template}`,
    "compare it with the model's original tokenizer_config.json, or download it again",
  );
}
