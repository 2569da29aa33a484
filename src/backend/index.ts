// Picks a compute backend by name; `auto` takes CUDA where a driver and GPU answer, else the CPU.
import { CpuBackend } from "./cpu/index.js";
import type { Backend } from "./ops.js";

export type BackendName = "cpu" | "cuda" | "auto";

export interface BackendChoice {
  backend: Backend;
  /** Why `auto` chose what it chose, for the user. */
  note?: string;
}

export async function createBackend(name: BackendName): Promise<BackendChoice> {
  if (name === "cpu") return { backend: new CpuBackend() };
  try {
    const { createCudaBackend } = await import("./cuda/index.js");
    return { backend: await createCudaBackend() };
  } catch (e) {
    if (name === "cuda") throw e;
    return { backend: new CpuBackend(), note: `using the CPU backend: ${(e as Error).message}` };
  }
}

export function isBackendName(s: string): s is BackendName {
  return s === "cpu" || s === "cuda" || s === "auto";
}
