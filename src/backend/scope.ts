// Scopes free the tensors that ops made inside them, for any backend.
import type { Backend, Tensor } from "./ops.js";

/** `scoped` for any backend with push/popScope: sync or async bodies. */
export function runScoped<T extends Tensor | Promise<Tensor>>(b: Pick<Backend, "pushScope" | "popScope">, fn: () => T): T {
  b.pushScope();
  let result: T;
  try {
    result = fn();
  } catch (e) {
    b.popScope();
    throw e;
  }
  if (result instanceof Promise) {
    return result.then(
      (t) => (b.popScope([t]), t),
      (e) => {
        b.popScope();
        throw e;
      },
    ) as T;
  }
  b.popScope([result as Tensor]);
  return result;
}

