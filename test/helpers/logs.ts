/** A daemon's log as the programs write it (pino's JSON lines), kept and parsed, for tests that assert on it. */
import pino, { type Logger } from 'pino';

/** pino's numeric levels, as they appear in a line's `level`. */
export const LEVEL = { info: 30, warn: 40, error: 50 } as const;

export type LogLine = Record<string, unknown>;

export interface JsonLog {
  logger: Logger;
  lines: LogLine[];
  /** Resolves with the first line, logged so far or later, that `match` accepts. */
  when(match: (line: LogLine) => boolean): Promise<LogLine>;
}

export function jsonLog(level = 'info'): JsonLog {
  const lines: LogLine[] = [];
  const waiters: Array<{ match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }> = [];
  const logger = pino({ level }, {
    write: (text: string) => {
      const line = JSON.parse(text) as LogLine;
      lines.push(line);
      for (const w of waiters.filter((w) => w.match(line))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    },
  });
  return {
    logger,
    lines,
    when: (match) => {
      const seen = lines.find(match);
      return seen ? Promise.resolve(seen) : new Promise((resolve) => waiters.push({ match, resolve }));
    },
  };
}
