// The model that ships with layerwise: stories260K, a real trained 260K-parameter Llama (models/stories260K, MIT).
import { fileURLToPath } from "node:url";

/** Folder of the bundled stories260K checkpoint: `layerwise demo` runs it, and the tests use it as a real model. */
export const bundledModelDir = fileURLToPath(new URL("../../../models/stories260K", import.meta.url));
