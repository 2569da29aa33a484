// Every failure a user can cause or meet carries a stable code, a message with the values involved, and a next step.

export class LayerwiseError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = new.target.name;
  }

  toJSON(): { code: string; message: string; hint?: string } {
    return { code: this.code, message: this.message, ...(this.hint ? { hint: this.hint } : {}) };
  }
}

/** The model folder or one of its files is missing, unreadable or inconsistent. */
export class CheckpointError extends LayerwiseError {}

/** The caller asked for something impossible: bad flag, prompt too long, unknown option. */
export class UsageError extends LayerwiseError {}

/** A compute backend failed: driver missing, out of memory, kernel error. */
export class BackendError extends LayerwiseError {}

/** Reading or writing the tool's own caches failed. */
export class CacheError extends LayerwiseError {}

/** A disk (or quota) has no room for what layerwise was about to write or was writing. */
export class DiskFullError extends LayerwiseError {}
