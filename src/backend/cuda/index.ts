// The CUDA backend entry point (driver API through koffi).
import { BackendError } from "../../errors.js";
import type { Backend } from "../ops.js";

export async function createCudaBackend(): Promise<Backend> {
  throw new BackendError("CUDA_UNAVAILABLE", "the CUDA backend is not built yet", "use --backend cpu");
}
