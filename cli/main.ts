#!/usr/bin/env node
/**
 * p2p: the command line. Parses arguments, talks to the local p2p-peerd over its Unix socket (or to a
 * tracker for `admin`), prints. Exit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 refused.
 *
 * Start-up time is most of what a `p2p status` costs (issue 8), so this file imports nothing up front:
 * the common command lines skip yargs (cli/fast-path.ts), and each module is loaded only when the
 * command line needs it. See bench/cli-startup.ts for the figures.
 */
import type { Invocation } from './commands.js';
import { parseFast } from './fast-path.js';

async function main(args: string[]): Promise<void> {
  const fast = parseFast(args);
  if (fast === 'version') {
    const { packageVersion } = await import('../protocol/program.js');
    process.stdout.write(`${packageVersion()}\n`);
    return;
  }
  const invocation: Invocation | undefined = fast ?? (await (await import('./arguments.js')).parseArguments(args));
  if (!invocation) return;
  const [{ execute, exitCodeFor, EXIT, PROGRAM }, { toP2PError }] = await Promise.all([import('./commands.js'), import('../protocol/client.js')]);
  try {
    await execute(invocation);
    process.exitCode = EXIT.ok;
  } catch (err) {
    const e = toP2PError(err);
    process.stderr.write(`${PROGRAM}: ${e.message}\n`);
    process.exitCode = exitCodeFor(e.code);
  }
}

// No top-level await: the same code runs as the ES module tsc writes and as the one-file CommonJS bundle
// that `p2p` runs (cli/bundle.ts).
void main(process.argv.slice(2));
