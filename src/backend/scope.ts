// Scopes free the tensors that ops made inside them, for any backend.
import type { Backend, Tensor } from "./ops.js";

/** `scoped` for any backend with push/popScope: sync or async bodies. */
export function runScoped<T extends Tensor | Promise<Tensor>>(
  b: Pick<Backend, "pushScope" | "popScope">,
  fn: () => T,
): T {
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

/** The tensors ops made in each open scope; a backend frees them when the scope closes. */
export class ScopeStack<T extends Tensor> {
  private readonly scopes: T[][] = [];

  constructor(private readonly free: (t: T) => void) {}

  push(): void {
    this.scopes.push([]);
  }

  /** Closes the innermost scope: its tensors are freed, except `keep`, which move to the enclosing scope. */
  pop(keep: readonly Tensor[] = []): void {
    const made = this.scopes.pop();
    if (!made) throw new Error("popScope without pushScope");
    const kept = new Set(keep);
    for (const t of made) {
      if (kept.has(t)) this.scopes[this.scopes.length - 1]?.push(t);
      else this.free(t);
    }
  }

  /** Records a tensor an op made (tensors made outside any scope are the caller's to free). */
  add(t: T): T {
    this.scopes[this.scopes.length - 1]?.push(t);
    return t;
  }

  get open(): boolean {
    return this.scopes.length > 0;
  }
}
