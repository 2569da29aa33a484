// Shapes of real models (and tiny ones for tests), for random-weight checkpoints written by `make-test-model`.

export type TokenizerStyle = "llama3" | "chatml" | "gemma";

export interface TestModelPreset {
  readonly arch: string;
  /** config.json as the real model ships it, minus the fields every preset shares. */
  readonly config: Record<string, unknown>;
  readonly tokenizer: TokenizerStyle;
  /** How many trailing vocabulary ids are special tokens. */
  readonly specialTokens: number;
  /** Std of random matrices: a number (HF's initializer_range) or "fan-in" (1/sqrt(in), so tiny models have peaked outputs). */
  readonly initStd: number | "fan-in";
}

const llama3Rope = (factor: number, original: number) => ({
  rope_type: "llama3",
  factor,
  low_freq_factor: 1.0,
  high_freq_factor: 4.0,
  original_max_position_embeddings: original,
});

const llamaBase = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  attention_bias: false,
  attention_dropout: 0.0,
  hidden_act: "silu",
  mlp_bias: false,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  use_cache: true,
};

const qwen3Base = {
  architectures: ["Qwen3ForCausalLM"],
  model_type: "qwen3",
  attention_bias: false,
  attention_dropout: 0.0,
  hidden_act: "silu",
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  use_sliding_window: false,
  sliding_window: null,
  use_cache: true,
};

const gemma3Base = {
  architectures: ["Gemma3ForCausalLM"],
  model_type: "gemma3_text",
  attention_bias: false,
  attention_dropout: 0.0,
  hidden_activation: "gelu_pytorch_tanh",
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  rope_local_base_freq: 10000.0,
  attn_logit_softcapping: null,
  final_logit_softcapping: null,
  use_cache: true,
};

export const presets: Readonly<Record<string, TestModelPreset>> = {
  "tiny-llama": {
    arch: "llama",
    tokenizer: "llama3",
    specialTokens: 16,
    initStd: "fan-in",
    config: {
      ...llamaBase,
      hidden_size: 64,
      intermediate_size: 176,
      num_hidden_layers: 4,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 16,
      vocab_size: 1024,
      max_position_embeddings: 16384,
      rope_theta: 500000.0,
      rope_scaling: llama3Rope(8.0, 64),
      tie_word_embeddings: false,
    },
  },
  "tiny-qwen3": {
    arch: "qwen3",
    tokenizer: "chatml",
    specialTokens: 16,
    initStd: "fan-in",
    config: {
      ...qwen3Base,
      hidden_size: 64,
      intermediate_size: 160,
      num_hidden_layers: 3,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 32,
      vocab_size: 1024,
      max_position_embeddings: 4096,
      rope_theta: 1000000.0,
      tie_word_embeddings: true,
    },
  },
  "tiny-gemma3": {
    arch: "gemma3",
    tokenizer: "gemma",
    specialTokens: 16,
    initStd: "fan-in",
    config: {
      ...gemma3Base,
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 4,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 32,
      vocab_size: 1024,
      max_position_embeddings: 4096,
      sliding_window: 16,
      sliding_window_pattern: 2,
      query_pre_attn_scalar: 32,
      rope_scaling: { rope_type: "linear", factor: 8.0 },
      tie_word_embeddings: true,
    },
  },
  "llama-3.2-1b": {
    arch: "llama",
    tokenizer: "llama3",
    specialTokens: 256,
    initStd: 0.02,
    config: {
      ...llamaBase,
      hidden_size: 2048,
      intermediate_size: 8192,
      num_hidden_layers: 16,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 64,
      vocab_size: 128256,
      max_position_embeddings: 131072,
      rope_theta: 500000.0,
      rope_scaling: llama3Rope(32.0, 8192),
      tie_word_embeddings: true,
    },
  },
  "llama-3.1-8b": {
    arch: "llama",
    tokenizer: "llama3",
    specialTokens: 256,
    initStd: 0.02,
    config: {
      ...llamaBase,
      hidden_size: 4096,
      intermediate_size: 14336,
      num_hidden_layers: 32,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 128,
      vocab_size: 128256,
      max_position_embeddings: 131072,
      rope_theta: 500000.0,
      rope_scaling: llama3Rope(8.0, 8192),
      tie_word_embeddings: false,
    },
  },
  "qwen3-8b": {
    arch: "qwen3",
    tokenizer: "chatml",
    specialTokens: 293,
    initStd: 0.02,
    config: {
      ...qwen3Base,
      hidden_size: 4096,
      intermediate_size: 12288,
      num_hidden_layers: 36,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 128,
      vocab_size: 151936,
      max_position_embeddings: 40960,
      rope_theta: 1000000.0,
      tie_word_embeddings: false,
    },
  },
  "gemma-3-12b": {
    arch: "gemma3",
    tokenizer: "gemma",
    specialTokens: 64,
    initStd: 0.02,
    config: {
      ...gemma3Base,
      hidden_size: 3840,
      intermediate_size: 15360,
      num_hidden_layers: 48,
      num_attention_heads: 16,
      num_key_value_heads: 8,
      head_dim: 256,
      vocab_size: 262208,
      max_position_embeddings: 131072,
      sliding_window: 1024,
      sliding_window_pattern: 6,
      query_pre_attn_scalar: 256,
      rope_scaling: { rope_type: "linear", factor: 8.0 },
      tie_word_embeddings: true,
    },
  },
};
