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

/**
 * The command that runs `script` with Node as a program of its own, as a user runs it: without the test
 * runner's coverage hook. tap's @tapjs/processinfo adds an `--import` of itself to NODE_OPTIONS in every
 * process a test spawns; loading it costs each process about 0.25 s of CPU before our code starts, and the
 * suite starts a few hundred daemons (the cluster fault tests took 38 s with it, 28.5 s without).
 * `/usr/bin/env` sets NODE_OPTIONS to what the test asked for, if anything, after the hook has added
 * itself. The daemons' code is covered where tests run the same classes in process; what only a separate
 * process runs (their `main` files) shows as less covered. `p2p` runs keep the hook (programs.ts `run`):
 * much of cli/ runs only in them.
 */
export function programCommand(script: string, args: string[], nodeOptions = ''): { command: string; args: string[] } {
  return { command: '/usr/bin/env', args: [`NODE_OPTIONS=${nodeOptions}`, process.execPath, script, ...args] };
}
