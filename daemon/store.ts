/**
 * The tracker's durable state in SQLite (WAL, synchronous=FULL: a write is on disk before it is
 * acknowledged). It holds three things, each in its own tables:
 * - the replicated log (daemon/raft/log.ts): entries not yet folded into the state, the term and vote;
 * - the state the log's committed entries built: the blacklist with its removals (tombstones), reports
 *   and the audit log, each change stamped with the (term, index) of the entry that made it, and the
 *   index of the last entry applied, in the same transaction as the change;
 * - records waiting to be merged into the acting main (after this tracker had to give up applied state).
 * `path` ':memory:' gives a store that lives as long as the object (the deterministic simulation).
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrate, type Migration, type MigrationResult } from '../protocol/schema.js';

/** The (term, index) of the log entry that made a change: a logical order shared by every tracker. */
export type Stamp = readonly [term: number, index: number];

export function compareStamps(a: Stamp, b: Stamp): number {
  return a[0] - b[0] || a[1] - b[1];
}

export interface BlacklistEntry {
  target: string;
  reason: string;
  since: number;
  addedBy: string;
}

export interface StampedBan extends BlacklistEntry {
  stamp: Stamp;
}

/** A removal from the blacklist, kept so that a merge cannot bring back an older ban. */
export interface Tombstone {
  target: string;
  by: string;
  time: number;
  stamp: Stamp;
}

export interface ReportRecord {
  id: string;
  reporter: string;
  fileId: string;
  reason: string;
  targets: string[];
  evidence: number;
  time: number;
  status: string;
}

export interface StampedReport extends ReportRecord {
  stamp: Stamp;
  statusStamp: Stamp;
}

export interface AuditRecord {
  time: number;
  actor: string;
  action: string;
  detail: string;
}

export interface StoredEntry {
  index: number;
  term: number;
  epoch: number;
  op: string;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS blacklist (
    target TEXT PRIMARY KEY, reason TEXT NOT NULL, since INTEGER NOT NULL, added_by TEXT NOT NULL,
    stamp_term INTEGER NOT NULL DEFAULT 0, stamp_index INTEGER NOT NULL DEFAULT 0);
  CREATE TABLE IF NOT EXISTS tombstones (
    target TEXT PRIMARY KEY, by TEXT NOT NULL, time INTEGER NOT NULL,
    stamp_term INTEGER NOT NULL, stamp_index INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY, reporter TEXT NOT NULL, file_id TEXT NOT NULL, reason TEXT NOT NULL,
    targets TEXT NOT NULL, evidence INTEGER NOT NULL, time INTEGER NOT NULL, status TEXT NOT NULL,
    stamp_term INTEGER NOT NULL DEFAULT 0, stamp_index INTEGER NOT NULL DEFAULT 0,
    status_term INTEGER NOT NULL DEFAULT 0, status_index INTEGER NOT NULL DEFAULT 0);
  CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, detail TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS log (
    idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, epoch INTEGER NOT NULL, op TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS pending_merge (id INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS known_keys (address TEXT PRIMARY KEY, key BLOB NOT NULL, learned_at INTEGER NOT NULL);
`;

/**
 * The tracker database's schema versions (protocol/schema.ts). Version 1 is the schema of release 0.2,
 * reached from any earlier data folder (0.1 had no version): the tables, the stamp columns that 0.1's
 * first data folders lacked, and the old replication position turned into the start of the log.
 */
const STORE_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    what: 'tables of release 0.2; stamps on old rows; the old replication position as the start of the log',
    up: (db) => {
      db.exec(SCHEMA);
      const columns = (table: string): Set<string> => new Set((db.prepare(`PRAGMA table_info(${table})`).all() as Array<{ name: string }>).map((c) => c.name));
      const add = (table: string, column: string): void => {
        if (!columns(table).has(column)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} INTEGER NOT NULL DEFAULT 0`);
      };
      const meta = (key: string): string | undefined => (db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
      const setMeta = (key: string, value: string): void => void db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run(key, value);
      // Data folders written before stamps existed: every old row gets stamp (0, 0), older than any new write.
      for (const c of ['stamp_term', 'stamp_index']) add('blacklist', c);
      for (const c of ['stamp_term', 'stamp_index', 'status_term', 'status_index']) add('reports', c);
      // The old replication position becomes the point the (empty) log starts after.
      const oldSeq = meta('seq');
      if (oldSeq !== undefined && meta('log_start_index') === undefined) {
        setMeta('log_start_index', oldSeq);
        setMeta('log_start_term', meta('term') ?? '0');
        setMeta('applied', oldSeq);
        setMeta('applied_term', meta('term') ?? '0');
      }
      db.exec('DROP TABLE IF EXISTS merge_journal');
    },
  },
];

/** Audit rows kept; older ones are dropped as new ones come. */
const AUDIT_KEEP = 100_000;

export class Store {
  readonly db: Database.Database;
  /** The schema version the database had when opened, and the migrations that ran (for the start-up log). */
  readonly schema: MigrationResult;
  private readonly stmts: ReturnType<Store['prepare']>;
  private pendingRows: number | undefined;
  /** One transaction wrapper for every call (better-sqlite3 builds a wrapper per `transaction()`). */
  private readonly runInTransaction: (fn: () => unknown) => unknown;

  constructor(dataDir: string | ':memory:') {
    if (dataDir === ':memory:') {
      this.db = new Database(':memory:');
    } else {
      fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      this.db = new Database(path.join(dataDir, 'tracker.sqlite'));
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
    }
    this.schema = migrate(this.db, STORE_MIGRATIONS, dataDir === ':memory:' ? 'the tracker database' : path.join(dataDir, 'tracker.sqlite'));
    // The admin's report pages (reportsAfter) read in this order. An index is no change of schema: an
    // older release opening this database uses it or ignores it, so it needs no new version.
    this.db.exec('CREATE INDEX IF NOT EXISTS reports_by_time ON reports(time, id)');
    this.stmts = this.prepare();
    this.runInTransaction = this.db.transaction((fn: () => unknown) => fn());
  }

  private prepare() {
    const db = this.db;
    return {
      getMeta: db.prepare('SELECT value FROM meta WHERE key = ?'),
      setMeta: db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value'),
      ban: db.prepare('SELECT target, reason, since, added_by AS addedBy, stamp_term AS t, stamp_index AS i FROM blacklist WHERE target = ?'),
      bans: db.prepare('SELECT target, reason, since, added_by AS addedBy, stamp_term AS t, stamp_index AS i FROM blacklist ORDER BY since, target'),
      putBan: db.prepare(
        `INSERT INTO blacklist (target, reason, since, added_by, stamp_term, stamp_index) VALUES (@target, @reason, @since, @addedBy, @t, @i)
         ON CONFLICT(target) DO UPDATE SET reason = excluded.reason, since = excluded.since, added_by = excluded.added_by,
           stamp_term = excluded.stamp_term, stamp_index = excluded.stamp_index`,
      ),
      delBan: db.prepare('DELETE FROM blacklist WHERE target = ?'),
      tomb: db.prepare('SELECT target, by, time, stamp_term AS t, stamp_index AS i FROM tombstones WHERE target = ?'),
      tombs: db.prepare('SELECT target, by, time, stamp_term AS t, stamp_index AS i FROM tombstones ORDER BY target'),
      putTomb: db.prepare(
        `INSERT INTO tombstones (target, by, time, stamp_term, stamp_index) VALUES (@target, @by, @time, @t, @i)
         ON CONFLICT(target) DO UPDATE SET by = excluded.by, time = excluded.time, stamp_term = excluded.stamp_term, stamp_index = excluded.stamp_index`,
      ),
      delTomb: db.prepare('DELETE FROM tombstones WHERE target = ?'),
      report: db.prepare('SELECT * FROM reports WHERE id = ?'),
      reports: db.prepare('SELECT * FROM reports ORDER BY time, id'),
      // The reports' targets are a JSON array per row; json_each reads them in SQLite's C, with no row made
      // in JavaScript: 16-17 ms at 100,000 reports, where reading them all and filtering took 0.7-1.0 s.
      reportersOf: db.prepare('SELECT DISTINCT reporter FROM reports, json_each(reports.targets) WHERE json_each.value = ?').pluck(),
      reportsAfter: db.prepare('SELECT * FROM reports WHERE (time, id) > (@time, @id) ORDER BY time, id LIMIT @limit'),
      putReport: db.prepare(
        `INSERT INTO reports (id, reporter, file_id, reason, targets, evidence, time, status, stamp_term, stamp_index, status_term, status_index)
         VALUES (@id, @reporter, @fileId, @reason, @targets, @evidence, @time, @status, @t, @i, @st, @si)
         ON CONFLICT(id) DO UPDATE SET status = excluded.status, status_term = excluded.status_term, status_index = excluded.status_index`,
      ),
      audit: db.prepare('SELECT time, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?'),
      addAudit: db.prepare('INSERT INTO audit (time, actor, action, detail) VALUES (@time, @actor, @action, @detail)'),
      trimAudit: db.prepare('DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?'),
      logAll: db.prepare('SELECT idx AS "index", term, epoch, op FROM log ORDER BY idx'),
      logPut: db.prepare('INSERT OR REPLACE INTO log (idx, term, epoch, op) VALUES (?, ?, ?, ?)'),
      logTruncate: db.prepare('DELETE FROM log WHERE idx > ?'),
      logCompact: db.prepare('DELETE FROM log WHERE idx <= ?'),
      pendingAdd: db.prepare('INSERT INTO pending_merge (record) VALUES (?)'),
      pending: db.prepare('SELECT id, record FROM pending_merge ORDER BY id LIMIT ?'),
      pendingClear: db.prepare('DELETE FROM pending_merge WHERE id <= ?'),
      pendingCount: db.prepare('SELECT COUNT(*) AS n FROM pending_merge'),
    };
  }

  getMeta(key: string): string | undefined {
    return (this.stmts.getMeta.get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string | number): void {
    this.stmts.setMeta.run(key, String(value));
  }

  /** The key learned for another tracker's address on first contact (not replicated; kept across wipes of state). */
  knownKey(address: string): Buffer | undefined {
    return (this.db.prepare('SELECT key FROM known_keys WHERE address = ?').get(address) as { key: Buffer } | undefined)?.key;
  }

  learnKey(address: string, key: Buffer, at: number): void {
    this.db.prepare('INSERT INTO known_keys (address, key, learned_at) VALUES (?, ?, ?) ON CONFLICT(address) DO UPDATE SET key = excluded.key, learned_at = excluded.learned_at').run(address, key, at);
  }

  metaNumber(key: string): number {
    return Number(this.getMeta(key) ?? 0);
  }

  /** Runs `fn` in one transaction: all of it is durable, or none of it. */
  transaction<T>(fn: () => T): T {
    return this.runInTransaction(fn) as T;
  }



  // --- the blacklist and its tombstones ------------------------------------------------------------

  ban(target: string): StampedBan | undefined {
    const r = this.stmts.ban.get(target) as (BlacklistEntry & { t: number; i: number }) | undefined;
    return r && { target: r.target, reason: r.reason, since: r.since, addedBy: r.addedBy, stamp: [r.t, r.i] };
  }

  bans(): StampedBan[] {
    return (this.stmts.bans.all() as Array<BlacklistEntry & { t: number; i: number }>).map((r) => ({ target: r.target, reason: r.reason, since: r.since, addedBy: r.addedBy, stamp: [r.t, r.i] }));
  }

  blacklist(): BlacklistEntry[] {
    return this.bans().map(({ target, reason, since, addedBy }) => ({ target, reason, since, addedBy }));
  }

  putBan(b: StampedBan): void {
    this.stmts.delTomb.run(b.target);
    this.stmts.putBan.run({ target: b.target, reason: b.reason, since: b.since, addedBy: b.addedBy, t: b.stamp[0], i: b.stamp[1] });
  }

  tombstone(target: string): Tombstone | undefined {
    const r = this.stmts.tomb.get(target) as { target: string; by: string; time: number; t: number; i: number } | undefined;
    return r && { target: r.target, by: r.by, time: r.time, stamp: [r.t, r.i] };
  }

  tombstones(): Tombstone[] {
    return (this.stmts.tombs.all() as Array<{ target: string; by: string; time: number; t: number; i: number }>).map((r) => ({ target: r.target, by: r.by, time: r.time, stamp: [r.t, r.i] }));
  }

  putTombstone(t: Tombstone): void {
    this.stmts.delBan.run(t.target);
    this.stmts.putTomb.run({ target: t.target, by: t.by, time: t.time, t: t.stamp[0], i: t.stamp[1] });
  }

  // --- reports ---------------------------------------------------------------------------------------

  report(id: string): StampedReport | undefined {
    const r = this.stmts.report.get(id) as ReportRow | undefined;
    return r && fromReportRow(r);
  }

  stampedReports(): StampedReport[] {
    return (this.stmts.reports.all() as ReportRow[]).map(fromReportRow);
  }

  reports(): ReportRecord[] {
    return this.stampedReports().map(({ stamp: _s, statusStamp: _t, ...r }) => r);
  }

  /** Every peer that filed a report naming `target`, each once. */
  reportersOf(target: string): string[] {
    return this.stmts.reportersOf.all(target) as string[];
  }

  /** Up to `limit` reports after (time, id) `after` in the order reports() gives (none: from the first). */
  reportsAfter(after: { time: number; id: string } | undefined, limit: number): ReportRecord[] {
    const rows = this.stmts.reportsAfter.all({ time: after?.time ?? -1, id: after?.id ?? '', limit }) as ReportRow[];
    return rows.map(fromReportRow).map(({ stamp: _s, statusStamp: _t, ...r }) => r);
  }

  hasReport(id: string): boolean {
    return this.stmts.report.get(id) !== undefined;
  }

  putReport(r: StampedReport): void {
    this.stmts.putReport.run({
      id: r.id, reporter: r.reporter, fileId: r.fileId, reason: r.reason, targets: JSON.stringify(r.targets), evidence: r.evidence,
      time: r.time, status: r.status, t: r.stamp[0], i: r.stamp[1], st: r.statusStamp[0], si: r.statusStamp[1],
    });
  }

  // --- audit -----------------------------------------------------------------------------------------

  audit(limit = 1000): AuditRecord[] {
    return this.stmts.audit.all(limit) as AuditRecord[];
  }

  addAudit(a: AuditRecord): void {
    this.stmts.addAudit.run(a);
  }

  /** Drops every durable record of the state (not the log): a snapshot replaces them. */
  clearState(): void {
    this.db.exec('DELETE FROM blacklist; DELETE FROM tombstones; DELETE FROM reports; DELETE FROM audit;');
  }

  trimAudit(): void {
    this.stmts.trimAudit.run(AUDIT_KEEP);
  }

  // --- the log ---------------------------------------------------------------------------------------

  logEntries(): StoredEntry[] {
    return this.stmts.logAll.all() as StoredEntry[];
  }

  putLogEntry(e: StoredEntry): void {
    this.stmts.logPut.run(e.index, e.term, e.epoch, e.op);
  }

  /** Drops every entry after `index`. */
  truncateLog(index: number): void {
    this.stmts.logTruncate.run(index);
  }

  /** Drops every entry up to and including `index`. */
  compactLog(index: number): void {
    this.stmts.logCompact.run(index);
  }

  // --- records waiting to be merged into the main ----------------------------------------------------

  addPending(records: string[]): void {
    for (const r of records) this.stmts.pendingAdd.run(r);
    this.pendingRows = undefined;
  }

  pending(limit: number): Array<{ id: number; record: string }> {
    return this.stmts.pending.all(limit) as Array<{ id: number; record: string }>;
  }

  /** Asked every heartbeat: counted once, then again only after a change. */
  hasPending(): boolean {
    this.pendingRows ??= (this.stmts.pendingCount.get() as { n: number }).n;
    return this.pendingRows > 0;
  }

  clearPending(upToId: number): void {
    this.stmts.pendingClear.run(upToId);
    this.pendingRows = undefined;
  }

  close(): void {
    this.db.close();
  }
}

interface ReportRow {
  id: string;
  reporter: string;
  file_id: string;
  reason: string;
  targets: string;
  evidence: number;
  time: number;
  status: string;
  stamp_term: number;
  stamp_index: number;
  status_term: number;
  status_index: number;
}

function fromReportRow(r: ReportRow): StampedReport {
  return {
    id: r.id, reporter: r.reporter, fileId: r.file_id, reason: r.reason, targets: JSON.parse(r.targets) as string[], evidence: r.evidence,
    time: r.time, status: r.status, stamp: [r.stamp_term, r.stamp_index], statusStamp: [r.status_term, r.status_index],
  };
}
