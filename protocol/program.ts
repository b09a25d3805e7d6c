/**
 * Process plumbing shared by the three programs (and only by their entry points): version, argument
 * errors as exit code 2, JSON logs on stderr, clean shutdown on SIGTERM and SIGINT.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type { Logger } from 'pino';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { P2PError } from './errors.js';

export function packageVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const p = path.join(dir, 'package.json');
    if (fs.existsSync(p)) {
      const pkg = JSON.parse(fs.readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'p2pshare') return pkg.version ?? '0.0.0';
    }
    dir = path.dirname(dir);
  }
  return '0.0.0';
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** JSON log lines on stderr (fd 2), synchronously so nothing is lost at exit. */
export function stderrLogger(level: string, name: string): Logger {
  // Loaded here, not at import: `p2p` starts without it (about 40 files) unless it logs.
  const pino = createRequire(import.meta.url)('pino') as typeof import('pino').default;
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

/** Runs `stop` once on SIGTERM or SIGINT, then exits 0 (or 1 if stopping failed). */
export function onShutdownSignal(log: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(0), 5000);
    force.unref();
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

/** A one-line usage error and exit code 2, as every program promises. */
export function usageError(program: string, message: string): never {
  process.stderr.write(`${program}: ${message.split('\n')[0]} (see ${program} --help)\n`);
  process.exit(2);
}

/**
 * What a program says when setting up fails: a data folder from a newer release (P2P_VERSION) cannot
 * start (exit 1, logged); anything else is taken as a bad flag (exit 2).
 */
export function setupFailed(program: string, log: Logger, err: unknown): never {
  if (err instanceof P2PError && err.code === 'P2P_VERSION') {
    log.fatal({ err, code: err.code }, 'cannot start');
    process.stderr.write(`${program}: cannot start: ${err.message}\n`);
    process.exit(1);
  }
  return usageError(program, (err as Error).message);
}
