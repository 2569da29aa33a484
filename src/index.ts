// layerwise's public API.
import "./check-node.js";
export {
  LayerwiseModel,
  Sequence,
  loadModel,
  withModel,
  type LoadOptions,
  type Prompt,
  type EngineStats,
} from "./engine/model.js";
export type { GenerateOptions, GenerationResult, FinishReason, TokenStats } from "./engine/generate.js";
export type { SamplingOptions } from "./engine/sampling.js";
export type { ChatMessage } from "./model/chat-template.js";
export { LayerwiseError, CheckpointError, UsageError, BackendError, CacheError } from "./errors.js";
export { architectures } from "./arch/index.js";
