/**
 * The tracker's durable state in SQLite (WAL, synchronous=FULL: a write is on disk before it is
 * acknowledged): the blacklist, reports, the audit log, the replication position (term, seq), and the
 * merge journal (writes a main acknowledged while no other tracker held them; see daemon/cluster.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';

export interface BlacklistEntry {
  target: string;
  reason: string;
  since: number;
  addedBy: string;
}

export interface ReportRecord {
  id: string; // "term:seq" of the write that recorded it: unique across trackers
  reporter: string;
  fileId: string;
  reason: string;
  targets: string[];
  evidence: number;
  time: number;
  status: string;
}

export interface AuditRecord {
  time: number;
  actor: string;
  action: string;
  detail: string;
}

/** A write this tracker acknowledged alone, kept until another tracker holds it too. */
export interface JournalEntry {
  id: number;
  term: number;
  seq: number;
  op: string; // JSON, as replicated
}

export class Store {
  readonly db: Database.Database;

  constructor(dataDir: string) {
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    this.db = new Database(path.join(dataDir, 'tracker.sqlite'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS blacklist (
        target TEXT PRIMARY KEY, reason TEXT NOT NULL, since INTEGER NOT NULL, added_by TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS reports (
        id TEXT PRIMARY KEY, reporter TEXT NOT NULL, file_id TEXT NOT NULL, reason TEXT NOT NULL,
        targets TEXT NOT NULL, evidence INTEGER NOT NULL, time INTEGER NOT NULL, status TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, detail TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS merge_journal (
        id INTEGER PRIMARY KEY AUTOINCREMENT, term INTEGER NOT NULL, seq INTEGER NOT NULL, op TEXT NOT NULL);
    `);
  }

  getMeta(key: string): string | undefined {
    const row = this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
    return row?.value;
  }

  setMeta(key: string, value: string): void {
    this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  /** Runs `fn` in one transaction: all of it is durable, or none of it. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  blacklist(): BlacklistEntry[] {
    return this.db
      .prepare('SELECT target, reason, since, added_by AS addedBy FROM blacklist ORDER BY since, target')
      .all() as BlacklistEntry[];
  }

  addBlacklist(e: BlacklistEntry): void {
    this.db
      .prepare(
        `INSERT INTO blacklist (target, reason, since, added_by) VALUES (@target, @reason, @since, @addedBy)
         ON CONFLICT(target) DO NOTHING`,
      )
      .run(e);
  }

  removeBlacklist(target: string): boolean {
    return this.db.prepare('DELETE FROM blacklist WHERE target = ?').run(target).changes > 0;
  }

  reports(): ReportRecord[] {
    const rows = this.db
      .prepare('SELECT id, reporter, file_id AS fileId, reason, targets, evidence, time, status FROM reports ORDER BY time, id')
      .all() as Array<Omit<ReportRecord, 'targets'> & { targets: string }>;
    return rows.map((r) => ({ ...r, targets: JSON.parse(r.targets) as string[] }));
  }

  addReport(r: ReportRecord): void {
    this.db
      .prepare(
        `INSERT INTO reports (id, reporter, file_id, reason, targets, evidence, time, status)
         VALUES (@id, @reporter, @fileId, @reason, @targets, @evidence, @time, @status) ON CONFLICT(id) DO NOTHING`,
      )
      .run({ ...r, targets: JSON.stringify(r.targets) });
  }

  hasReport(id: string): boolean {
    return this.db.prepare('SELECT 1 FROM reports WHERE id = ?').get(id) !== undefined;
  }

  setReportStatus(id: string, status: string): void {
    this.db.prepare('UPDATE reports SET status = ? WHERE id = ?').run(status, id);
  }

  audit(limit = 1000): AuditRecord[] {
    return this.db
      .prepare('SELECT time, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?')
      .all(limit) as AuditRecord[];
  }

  addAudit(a: AuditRecord): void {
    this.db.prepare('INSERT INTO audit (time, actor, action, detail) VALUES (@time, @actor, @action, @detail)').run(a);
  }

  /** Replaces every durable table (a backup syncing from the main). */
  replaceAll(blacklist: BlacklistEntry[], reports: ReportRecord[], audit: AuditRecord[]): void {
    this.transaction(() => {
      this.db.exec('DELETE FROM blacklist; DELETE FROM reports; DELETE FROM audit;');
      for (const e of blacklist) this.addBlacklist(e);
      for (const r of reports) this.addReport(r);
      for (const a of [...audit].reverse()) this.addAudit(a);
    });
  }

  addJournal(term: number, seq: number, op: string): void {
    this.db.prepare('INSERT INTO merge_journal (term, seq, op) VALUES (?, ?, ?)').run(term, seq, op);
  }

  journal(): JournalEntry[] {
    return this.db.prepare('SELECT id, term, seq, op FROM merge_journal ORDER BY id').all() as JournalEntry[];
  }

  hasJournal(): boolean {
    return this.db.prepare('SELECT 1 FROM merge_journal LIMIT 1').get() !== undefined;
  }

  /** Forgets journal entries up to and including `id` (all of them without it). */
  clearJournal(id = Number.MAX_SAFE_INTEGER): void {
    this.db.prepare('DELETE FROM merge_journal WHERE id <= ?').run(id);
  }

  close(): void {
    this.db.close();
  }
}
