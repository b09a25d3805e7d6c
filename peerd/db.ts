/**
 * The peer daemon's durable state in SQLite (WAL): the manifest cache (so a restart does not re-hash
 * unchanged files), shared paths added by `p2p share`, transfer history with its receipts, the resume
 * journal of verified chunks, and its copy of the tracker's blacklist.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { systemClock, type Clock } from '../protocol/clock.js';
import { migrate, type Migration, type MigrationResult } from '../protocol/schema.js';

export interface CachedManifest {
  path: string;
  size: number;
  mtimeMs: number;
  id: string;
  manifest: Buffer;
}

export interface TransferPeer {
  id: string;
  address: string;
  bytes: number;
  chunks: number;
}

export interface TransferRecord {
  id: string;
  name: string;
  path: string;
  size: number;
  seconds: number;
  time: number;
  peers: TransferPeer[];
}

export interface ReceiptRecord {
  publicKey: Buffer;
  index: number;
  hash: Buffer;
  signature: Buffer;
}

/**
 * The peer database's schema versions (protocol/schema.ts). Version 1 has the tables of release 0.1 (which
 * had no version), version 2 adds the copy of the blacklist; release 0.2 reaches 2 from either.
 */
const PEER_DB_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    what: 'the tables of release 0.1 (which had no version)',
    up: (db) =>
      db.exec(`
      CREATE TABLE IF NOT EXISTS manifests (
        path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ms REAL NOT NULL, id TEXT NOT NULL, manifest BLOB NOT NULL);
      CREATE INDEX IF NOT EXISTS manifests_id ON manifests(id);
      CREATE TABLE IF NOT EXISTS shared_paths (path TEXT PRIMARY KEY, added INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS known_trackers (address TEXT PRIMARY KEY, key BLOB NOT NULL, learned_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS excluded_paths (path TEXT PRIMARY KEY);
      CREATE TABLE IF NOT EXISTS transfers (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, file_id TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
        size INTEGER NOT NULL, seconds REAL NOT NULL, time INTEGER NOT NULL, peers TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS receipts (
        transfer_seq INTEGER NOT NULL, public_key BLOB NOT NULL, chunk INTEGER NOT NULL, hash BLOB NOT NULL, signature BLOB NOT NULL);
      CREATE INDEX IF NOT EXISTS receipts_transfer ON receipts(transfer_seq);
      CREATE TABLE IF NOT EXISTS partials (
        file_id TEXT PRIMARY KEY, part_path TEXT NOT NULL, target TEXT NOT NULL, name TEXT NOT NULL, manifest BLOB NOT NULL);
      CREATE TABLE IF NOT EXISTS journal (file_id TEXT NOT NULL, chunk INTEGER NOT NULL, PRIMARY KEY (file_id, chunk));
      `),
  },
  {
    version: 2,
    what: "the tracker's blacklist as this peer last knew it",
    up: (db) => db.exec('CREATE TABLE IF NOT EXISTS blacklist_copy (target TEXT PRIMARY KEY) WITHOUT ROWID;'),
  },
];

export class PeerDb {
  readonly db: Database.Database;
  /** The schema version the database had when opened, and the migrations that ran (for the start-up log). */
  readonly schema: MigrationResult;

  /** `clock.wallNow()` stamps when a tracker's key was learned and a path shared (the order `sharedPaths` lists them in). */
  constructor(
    dataDir: string,
    private readonly clock: Pick<Clock, 'wallNow'> = systemClock,
  ) {
    this.db = new Database(path.join(dataDir, 'peerd.sqlite'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.schema = migrate(this.db, PEER_DB_MIGRATIONS, path.join(dataDir, 'peerd.sqlite'));
  }

  /** The blacklist's targets as this peer last knew them (see peerd/blacklist-cache.ts). */
  blacklistCopy(): string[] {
    return this.db.prepare('SELECT target FROM blacklist_copy').pluck().all() as string[];
  }

  /** Applies a change to that copy, in one transaction. */
  changeBlacklistCopy(added: readonly string[], removed: readonly string[]): void {
    this.db.transaction(() => {
      for (const t of added) this.copyStatements.add.run(t);
      for (const t of removed) this.copyStatements.remove.run(t);
    })();
  }

  /** Makes the copy exactly `targets`, in one transaction. */
  replaceBlacklistCopy(targets: Iterable<string>): void {
    this.db.transaction(() => {
      this.db.exec('DELETE FROM blacklist_copy');
      for (const t of targets) this.copyStatements.add.run(t);
    })();
  }

  private get copyStatements(): { add: Database.Statement; remove: Database.Statement } {
    return (this.copyStmts ??= {
      add: this.db.prepare('INSERT OR IGNORE INTO blacklist_copy (target) VALUES (?)'),
      remove: this.db.prepare('DELETE FROM blacklist_copy WHERE target = ?'),
    });
  }

  private copyStmts: { add: Database.Statement; remove: Database.Statement } | undefined;

  /** The key a tracker proved on first contact (`HOST:PORT`), kept like SSH's known_hosts. */
  knownTrackerKey(address: string): Buffer | undefined {
    return (this.db.prepare('SELECT key FROM known_trackers WHERE address = ?').get(address) as { key: Buffer } | undefined)?.key;
  }

  learnTrackerKey(address: string, key: Buffer): void {
    this.db.prepare('INSERT INTO known_trackers (address, key, learned_at) VALUES (?, ?, ?) ON CONFLICT(address) DO UPDATE SET key = excluded.key, learned_at = excluded.learned_at').run(address, key, this.clock.wallNow());
  }

  cachedManifest(p: string): CachedManifest | undefined {
    return this.db.prepare('SELECT path, size, mtime_ms AS mtimeMs, id, manifest FROM manifests WHERE path = ?').get(p) as CachedManifest | undefined;
  }

  manifestById(id: string): Buffer | undefined {
    const row = this.db.prepare('SELECT manifest FROM manifests WHERE id = ? LIMIT 1').get(id) as { manifest: Buffer } | undefined;
    return row?.manifest;
  }

  putManifest(m: CachedManifest): void {
    this.db
      .prepare(
        `INSERT INTO manifests (path, size, mtime_ms, id, manifest) VALUES (@path, @size, @mtimeMs, @id, @manifest)
         ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ms = excluded.mtime_ms, id = excluded.id, manifest = excluded.manifest`,
      )
      .run(m);
  }

  forgetManifest(p: string): void {
    this.db.prepare('DELETE FROM manifests WHERE path = ?').run(p);
  }

  sharedPaths(): string[] {
    return (this.db.prepare('SELECT path FROM shared_paths ORDER BY added').all() as Array<{ path: string }>).map((r) => r.path);
  }

  addSharedPath(p: string): void {
    this.db.prepare('INSERT OR IGNORE INTO shared_paths (path, added) VALUES (?, ?)').run(p, this.clock.wallNow());
  }

  removeSharedPath(p: string): void {
    this.db.prepare('DELETE FROM shared_paths WHERE path = ?').run(p);
  }

  excludedPaths(): Set<string> {
    return new Set((this.db.prepare('SELECT path FROM excluded_paths').all() as Array<{ path: string }>).map((r) => r.path));
  }

  setExcluded(p: string, excluded: boolean): void {
    if (excluded) this.db.prepare('INSERT OR IGNORE INTO excluded_paths (path) VALUES (?)').run(p);
    else this.db.prepare('DELETE FROM excluded_paths WHERE path = ?').run(p);
  }

  addTransfer(t: TransferRecord, receipts: ReceiptRecord[]): void {
    this.db.transaction(() => {
      const info = this.db
        .prepare('INSERT INTO transfers (file_id, name, path, size, seconds, time, peers) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(t.id, t.name, t.path, t.size, t.seconds, t.time, JSON.stringify(t.peers));
      const ins = this.db.prepare('INSERT INTO receipts (transfer_seq, public_key, chunk, hash, signature) VALUES (?, ?, ?, ?, ?)');
      for (const r of receipts) ins.run(info.lastInsertRowid, r.publicKey, r.index, r.hash, r.signature);
      // Keep the history bounded: the last 1000 transfers and their receipts.
      this.db.exec(`DELETE FROM receipts WHERE transfer_seq <= (SELECT seq FROM transfers ORDER BY seq DESC LIMIT 1 OFFSET 1000);
                    DELETE FROM transfers WHERE seq <= (SELECT seq FROM transfers ORDER BY seq DESC LIMIT 1 OFFSET 1000);`);
    })();
  }

  transfers(limit = 50): TransferRecord[] {
    const rows = this.db
      .prepare('SELECT file_id AS id, name, path, size, seconds, time, peers FROM transfers ORDER BY seq DESC LIMIT ?')
      .all(limit) as Array<Omit<TransferRecord, 'peers'> & { peers: string }>;
    return rows.map((r) => ({ ...r, peers: JSON.parse(r.peers) as TransferPeer[] }));
  }

  /** The newest transfer of `fileId` with its receipts (what `p2p report` reports). */
  lastTransfer(fileId: string): { transfer: TransferRecord; receipts: ReceiptRecord[] } | undefined {
    const row = this.db
      .prepare('SELECT seq, file_id AS id, name, path, size, seconds, time, peers FROM transfers WHERE file_id = ? ORDER BY seq DESC LIMIT 1')
      .get(fileId) as (Omit<TransferRecord, 'peers'> & { peers: string; seq: number }) | undefined;
    if (!row) return undefined;
    const receipts = (
      this.db.prepare('SELECT public_key AS publicKey, chunk AS "index", hash, signature FROM receipts WHERE transfer_seq = ?').all(row.seq) as ReceiptRecord[]
    );
    const { seq: _seq, ...rest } = row;
    return { transfer: { ...rest, peers: JSON.parse(row.peers) as TransferPeer[] }, receipts };
  }

  lastTransferByName(name: string): TransferRecord | undefined {
    const row = this.db
      .prepare('SELECT file_id AS id, name, path, size, seconds, time, peers FROM transfers WHERE name = ? ORDER BY seq DESC LIMIT 1')
      .get(name) as (Omit<TransferRecord, 'peers'> & { peers: string }) | undefined;
    return row ? { ...row, peers: JSON.parse(row.peers) as TransferPeer[] } : undefined;
  }

  partial(fileId: string): { partPath: string; target: string; name: string; manifest: Buffer; chunks: number[] } | undefined {
    const row = this.db.prepare('SELECT part_path AS partPath, target, name, manifest FROM partials WHERE file_id = ?').get(fileId) as
      | { partPath: string; target: string; name: string; manifest: Buffer }
      | undefined;
    if (!row) return undefined;
    const chunks = (this.db.prepare('SELECT chunk FROM journal WHERE file_id = ? ORDER BY chunk').all(fileId) as Array<{ chunk: number }>).map((r) => r.chunk);
    return { ...row, chunks };
  }

  allPartials(): Array<{ fileId: string; target: string; name: string }> {
    return this.db.prepare('SELECT file_id AS fileId, target, name FROM partials').all() as Array<{ fileId: string; target: string; name: string }>;
  }

  startPartial(fileId: string, partPath: string, target: string, name: string, manifest: Buffer): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM journal WHERE file_id = ?').run(fileId);
      this.db
        .prepare('INSERT OR REPLACE INTO partials (file_id, part_path, target, name, manifest) VALUES (?, ?, ?, ?, ?)')
        .run(fileId, partPath, target, name, manifest);
    })();
  }

  /** Records chunks as verified and on disk (call only after the data is synced). */
  journalChunks(fileId: string, chunks: number[]): void {
    if (chunks.length === 0) return;
    const ins = this.db.prepare('INSERT OR IGNORE INTO journal (file_id, chunk) VALUES (?, ?)');
    this.db.transaction(() => {
      for (const c of chunks) ins.run(fileId, c);
    })();
  }

  finishPartial(fileId: string): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM journal WHERE file_id = ?').run(fileId);
      this.db.prepare('DELETE FROM partials WHERE file_id = ?').run(fileId);
    })();
  }

  close(): void {
    this.db.close();
  }
}
