// Imported first by the library and the CLI: an older Node gets one clear message instead of an error from deep inside
// a module that needs a newer Node API (zlib.crc32 came in 20.15).

export const minimumNode = [20, 15] as const;

/** Why this Node cannot run layerwise, or undefined when it can. */
export function nodeVersionProblem(version = process.versions.node): string | undefined {
  const [major = 0, minor = 0] = version.split(".").map(Number);
  const [needMajor, needMinor] = minimumNode;
  if (major > needMajor || (major === needMajor && minor >= needMinor)) return undefined;
  return `layerwise needs Node.js ${needMajor}.${needMinor} or newer; this is Node.js ${version} (${process.execPath}). Install a current Node.js (https://nodejs.org) and run it again.`;
}
