/**
 * Process plumbing shared by the three programs (and only by their entry points): version, argument
 * errors as exit code 2, JSON logs on stderr, clean shutdown on SIGTERM and SIGINT.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type { Logger } from 'pino';
import type { OptionTable } from './settings.js';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { parseAddress, type Address } from './address.js';
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

export const LOG_FORMATS = ['pretty', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** The daemons' logging options, for their option tables (protocol/settings.ts). */
export const LOG_OPTIONS = {
  'log-level': { type: 'string', default: 'info', choices: LOG_LEVELS, describe: 'the least severe level logged' },
  'log-format': {
    type: 'string',
    // Human lines for whoever watches a terminal; JSON lines for journald, files and log shippers.
    default: process.stderr.isTTY ? 'pretty' : 'json',
    defaultDescription: 'pretty on a terminal, json otherwise',
    choices: LOG_FORMATS,
    describe: 'log lines on stderr: pretty (human text) or json (one object a line)',
  },
} as const satisfies OptionTable;

/**
 * Log lines on stderr (fd 2), synchronously so nothing is lost at exit: JSON, or human text through
 * pino-pretty (`pretty`).
 */
export function stderrLogger(level: string, name: string, format: string = 'json'): Logger {
  // Loaded here, not at import: `p2p` starts without them (pino is about 40 files) unless it logs, and
  // pino-pretty (with its colour and date modules) only for `--log-format pretty`.
  const load = createRequire(import.meta.url);
  const pino = load('pino') as typeof import('pino').default;
  const options = { name, level, base: { pid: process.pid } };
  if (format === 'pretty') {
    const pretty = load('pino-pretty') as typeof import('pino-pretty');
    return pino(options, pretty({ destination: 2, sync: true, colorize: process.stderr.isTTY === true, translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l', ignore: 'pid,hostname' }));
  }
  return pino(options, pino.destination({ fd: 2, sync: true }));
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

/** --metrics, the same on both daemons. */
export const METRICS_OPTIONS = {
  metrics: { type: 'string', describe: 'serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP; off by default)' },
} as const;

/** A --metrics value as the address to serve on (undefined: off); a bad one is a usage error naming the flag. */
export function metricsAddress(program: string, value: string | undefined): Address | undefined {
  if (value === undefined) return undefined;
  try {
    return parseAddress(value, true);
  } catch (err) {
    return usageError(program, `--metrics: ${(err as Error).message}`);
  }
}
