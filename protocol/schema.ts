/**
 * Versioned SQLite schemas for both daemons' `--data`. A database carries its schema version in
 * `PRAGMA user_version`; on start, every migration above it runs once, in order, each in one transaction
 * together with the new version, so a crash leaves the database at one version or the next, never in
 * between. A database written by a newer release (a version above the newest this one knows) is refused
 * with P2P_VERSION rather than read wrongly: downgrading a daemon needs the backup taken before its
 * upgrade (README.md, "Upgrades").
 */
import type Database from 'better-sqlite3';
import { P2PError } from './errors.js';

export interface Migration {
  /** The schema version this step leads to: 1, 2, 3... in order, with no gaps. */
  readonly version: number;
  /** What it changes, for the log line. */
  readonly what: string;
  /** Must be idempotent on databases from before versions existed (user_version 0): they may have any earlier tables. */
  readonly up: (db: Database.Database) => void;
}

export interface MigrationResult {
  from: number;
  to: number;
  applied: string[];
}

/** Brings `db` (the file `label`) to the newest version in `migrations`. */
export function migrate(db: Database.Database, migrations: readonly Migration[], label: string): MigrationResult {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`migrations of ${label} must be numbered 1, 2, 3... (found ${m.version} at position ${i + 1})`);
  });
  const newest = migrations.length;
  const from = db.pragma('user_version', { simple: true }) as number;
  if (from > newest) {
    throw new P2PError(
      'P2P_VERSION',
      `${label} has schema version ${from}, written by a newer release; this one knows up to ${newest}. Run the newer release, or restore the backup taken before the upgrade`,
    );
  }
  const applied: string[] = [];
  for (const m of migrations.slice(from)) {
    db.transaction(() => {
      m.up(db);
      db.pragma(`user_version = ${m.version}`);
    })();
    applied.push(`${m.version}: ${m.what}`);
  }
  return { from, to: newest, applied };
}
