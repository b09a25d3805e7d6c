/**
 * The repository's root, found from this file: the nearest folder above it with a package.json. Tests
 * run compiled from dist/test/ (npm test builds them), or as TypeScript from test/ (tap FILE.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export const ROOT = findRoot(path.dirname(fileURLToPath(import.meta.url)));

/** A file of the repository, by its path from the root (e.g. 'dist/daemon/main.js'). */
export function repoPath(relative: string): string {
  return path.join(ROOT, relative);
}
