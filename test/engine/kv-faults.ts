// A StoreIo whose files fail on demand: a full disk, an I/O error, a read-only folder, for the KV cache's fault tests.
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import type { StoreIo } from "../../src/engine/kv-store.js";

export type StoreOp = "create" | "write" | "read";

/** An errno error as node:fs throws it. */
export function errno(code: string, syscall: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated failure, ${syscall}`), { code, syscall });
}

/**
 * Opens real files, but an operation for which `fail(op, path)` gives an errno code throws it: "create" when a file is
 * created, "write" when its data is written, "read" when a file is read.
 */
export function faultyStoreIo(fail: (op: StoreOp, path: string) => string | undefined): StoreIo {
  return {
    async open(path, flags, mode) {
      const creating = (flags & constants.O_CREAT) !== 0;
      const code = creating ? fail("create", path) : undefined;
      if (code) throw errno(code, "open");
      const fh = await open(path, flags, mode);
      return new Proxy(fh, {
        get(target, prop) {
          const failing =
            prop === "writeFile" || prop === "write"
              ? fail("write", path)
              : prop === "read"
                ? fail("read", path)
                : undefined;
          if (failing) return async () => Promise.reject(errno(failing, String(prop)));
          const v = Reflect.get(target, prop);
          return typeof v === "function" ? v.bind(target) : v;
        },
      });
    },
  };
}
