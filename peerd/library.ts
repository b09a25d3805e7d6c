/**
 * The files this peer shares: every regular file in the share folder (noticed without a restart) plus
 * paths given by `p2p share`. Each file's manifest is computed once and cached by path, size and mtime.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import {
  CHUNK_SIZE,
  chunkCount,
  decodeManifest,
  encodeManifest,
  manifestId,
  P2PError,
  systemClock,
  validateName,
  type Clock,
  type Manifest,
  type Timer,
} from '../protocol/index.js';
import type { PeerDb } from './db.js';

/** Watchers miss events on some filesystems (NFS, some containers): a slow rescan catches up. */
const RESCAN_EVERY_MS = 10_000;
/** A burst of changes in the share folder (a copy in progress) is scanned once, this long after the last. */
const RESCAN_DEBOUNCE_MS = 150;

export interface SharedFile {
  name: string;
  id: string;
  idBuf: Buffer;
  size: number;
  path: string;
  mtimeMs: number;
  manifest: Manifest;
  encoded: Buffer;
  /**
   * The file's stamp (`fileStamp`) when its manifest was made or checked: while the open file still has
   * it, no write has touched the file since, so the chunk server serves it without hashing each chunk.
   */
  stamp: string;
}

/**
 * What changes whenever a file's bytes can have changed: its inode, size, and modification and status
 * change times. The status change time (ctime) moves on every write, and no program can set it back.
 */
export function fileStamp(st: { ino: number; size: number; mtimeMs: number; ctimeMs: number }): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

/** Reads a file once, in 1 MiB chunks into one reused buffer, and returns its manifest. */
export async function hashFile(filePath: string): Promise<{ manifest: Manifest; encoded: Buffer; id: Buffer; size: number; mtimeMs: number; stamp: string }> {
  const fh = await fsp.open(filePath, 'r');
  try {
    const st = await fh.stat();
    const buf = Buffer.allocUnsafe(CHUNK_SIZE);
    const hashes: Buffer[] = [];
    const count = chunkCount(st.size, CHUNK_SIZE);
    for (let i = 0; i < count; i++) {
      const want = Math.min(CHUNK_SIZE, st.size - i * CHUNK_SIZE);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, i * CHUNK_SIZE + got);
        if (bytesRead === 0) throw new P2PError('P2P_CORRUPT_DATA', `${filePath} shrank while it was being hashed`);
        got += bytesRead;
      }
      hashes.push(createHash('sha256').update(buf.subarray(0, want)).digest());
    }
    const manifest: Manifest = { size: st.size, chunkSize: CHUNK_SIZE, hashes };
    const encoded = encodeManifest(manifest);
    // The stamp from before the first read: a write during hashing changes the file's stamp.
    return { manifest, encoded, id: manifestId(encoded), size: st.size, mtimeMs: st.mtimeMs, stamp: fileStamp(st) };
  } finally {
    await fh.close();
  }
}

export class Library extends EventEmitter {
  private readonly byPath = new Map<string, SharedFile>();
  /** One entry per id (the chunk server looks a file up by id for every chunk). */
  private readonly byIdIndex = new Map<string, SharedFile>();
  private watcher: fs.FSWatcher | undefined;
  private rescanTimer: Timer | undefined;
  private periodic: Timer | undefined;
  private scanning: Promise<void> = Promise.resolve();
  private closed = false;
  private excluded: Set<string>;
  /**
   * Absolute: every path the library keys by is. A relative one made the folder's files keyed by relative
   * paths while a finished download is recorded by its absolute one, so each download was hashed again.
   */
  readonly shareDir: string;

  constructor(
    shareDir: string,
    private readonly db: PeerDb,
    private readonly log: Logger,
    private readonly clock: Clock = systemClock,
  ) {
    super();
    this.shareDir = path.resolve(shareDir);
    // Releases before this one kept a relative share folder's paths relative (to the same working folder).
    this.excluded = new Set();
    for (const p of db.excludedPaths()) {
      const absolute = path.resolve(p);
      if (absolute !== p) {
        db.setExcluded(p, false);
        db.setExcluded(absolute, true);
      }
      this.excluded.add(absolute);
    }
  }

  async start(): Promise<void> {
    await fsp.mkdir(this.shareDir, { recursive: true });
    await this.rescan();
    try {
      this.watcher = fs.watch(this.shareDir, () => this.scheduleRescan());
      this.watcher.on('error', (err) => this.log.warn({ err }, 'share folder watch failed; relying on periodic rescans'));
    } catch (err) {
      this.log.warn({ err }, 'cannot watch the share folder; relying on periodic rescans');
    }
    // Watchers miss events on some filesystems (NFS, some containers); a slow rescan catches up.
    this.periodic = this.clock.setInterval(() => this.scheduleRescan(), RESCAN_EVERY_MS);
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    this.rescanTimer?.cancel();
    this.periodic?.cancel();
  }

  list(): SharedFile[] {
    return [...this.byPath.values()].sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  }

  byId(id: string): SharedFile | undefined {
    return this.byIdIndex.get(id);
  }

  private setEntry(p: string, entry: SharedFile): void {
    const old = this.byPath.get(p);
    this.byPath.set(p, entry);
    if (old && old.id !== entry.id) this.unindex(old);
    this.byIdIndex.set(entry.id, entry);
  }

  private deleteEntry(p: string): SharedFile | undefined {
    const f = this.byPath.get(p);
    if (!f) return undefined;
    this.byPath.delete(p);
    this.unindex(f);
    return f;
  }

  /** `f` left: its id stays indexed if another path holds the same bytes. */
  private unindex(f: SharedFile): void {
    if (this.byIdIndex.get(f.id) !== f) return;
    this.byIdIndex.delete(f.id);
    for (const other of this.byPath.values()) {
      if (other.id === f.id) {
        this.byIdIndex.set(other.id, other);
        return;
      }
    }
  }

  /** Files matching a name or an id (full hex, or a prefix of at least 8 characters). */
  find(key: string): SharedFile[] {
    const k = key.toLowerCase();
    return this.list().filter((f) => f.name === key || f.id === k || (k.length >= 8 && /^[0-9a-f]+$/.test(k) && f.id.startsWith(k)));
  }

  scheduleRescan(): void {
    if (this.closed) return;
    this.rescanTimer?.cancel();
    this.rescanTimer = this.clock.setTimeout(() => void this.rescan(), RESCAN_DEBOUNCE_MS);
  }

  /** Brings the shared set in line with the disk; one scan at a time. */
  rescan(): Promise<void> {
    this.scanning = this.scanning.then(() => this.doRescan()).catch((err: unknown) => this.log.warn({ err }, 'rescan failed'));
    return this.scanning;
  }

  private async doRescan(): Promise<void> {
    if (this.closed) return;
    const wanted = new Set<string>();
    let entries: fs.Dirent[] = [];
    try {
      entries = await fsp.readdir(this.shareDir, { withFileTypes: true });
    } catch (err) {
      this.log.warn({ err, dir: this.shareDir }, 'cannot read the share folder');
    }
    for (const e of entries) {
      // Dot files are skipped: partial downloads live there under a dot name until verified.
      if (!e.isFile() || e.name.startsWith('.')) continue;
      const p = path.join(this.shareDir, e.name);
      if (!this.excluded.has(p)) wanted.add(p);
    }
    for (const p of this.db.sharedPaths()) wanted.add(p);
    for (const p of [...this.byPath.keys()]) {
      if (!wanted.has(p)) this.drop(p);
    }
    for (const p of wanted) {
      if (this.closed) return;
      try {
        await this.ensure(p);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') this.drop(p);
        else this.log.warn({ path: p, err: (err as Error).message }, 'cannot share file');
      }
    }
  }

  private drop(p: string): void {
    const f = this.deleteEntry(p);
    if (f) this.emit('removed', f);
  }

  /** Shares `p` if it is new or changed; returns the shared entry. */
  private async ensure(p: string): Promise<SharedFile> {
    const st = await fsp.stat(p);
    if (!st.isFile()) throw new P2PError('P2P_BAD_PATH', `${p} is not a regular file`);
    const name = path.basename(p);
    validateName(name);
    const current = this.byPath.get(p);
    if (current && current.size === st.size && current.mtimeMs === st.mtimeMs) return current;
    let entry: SharedFile;
    const cached = this.db.cachedManifest(p);
    if (cached && cached.size === st.size && cached.mtimeMs === st.mtimeMs) {
      entry = { name, id: cached.id, idBuf: Buffer.from(cached.id, 'hex'), size: st.size, path: p, mtimeMs: st.mtimeMs, manifest: decodeManifest(cached.manifest), encoded: cached.manifest, stamp: fileStamp(st) };
    } else {
      const started = this.clock.now();
      const h = await hashFile(p);
      this.log.info({ path: p, size: h.size, ms: Math.round(this.clock.now() - started) }, 'hashed file');
      entry = { name, id: h.id.toString('hex'), idBuf: h.id, size: h.size, path: p, mtimeMs: h.mtimeMs, manifest: h.manifest, encoded: h.encoded, stamp: h.stamp };
      this.db.putManifest({ path: p, size: h.size, mtimeMs: h.mtimeMs, id: entry.id, manifest: h.encoded });
    }
    // Replace first, then tell: a listener asking whether the old id is still shared must hear no.
    this.setEntry(p, entry);
    if (current && current.id !== entry.id) this.emit('removed', current);
    this.emit('added', entry);
    return entry;
  }

  /** `p2p share PATH...`: shares files in place (no copy). */
  async share(paths: string[]): Promise<SharedFile[]> {
    const out: SharedFile[] = [];
    for (const raw of paths) {
      const p = path.resolve(raw);
      let st: fs.Stats;
      try {
        st = await fsp.stat(p);
      } catch {
        throw new P2PError('P2P_NOT_FOUND', `${raw}: no such file`);
      }
      if (!st.isFile()) throw new P2PError('P2P_BAD_PATH', `${raw} is not a regular file`);
      validateName(path.basename(p));
      await fsp.access(p, fs.constants.R_OK).catch(() => {
        throw new P2PError('P2P_BAD_PATH', `${raw} is not readable by the peer daemon`);
      });
      if (this.excluded.delete(p)) this.db.setExcluded(p, false);
      if (path.dirname(p) !== this.shareDir) this.db.addSharedPath(p);
      await this.scanning;
      out.push(await this.ensure(p));
    }
    return out;
  }

  /** `p2p unshare NAME|ID`: stops sharing (the file stays on disk). */
  unshare(key: string): SharedFile[] {
    const matches = this.find(key);
    if (matches.length === 0) throw new P2PError('P2P_NOT_FOUND', `'${key}' is not shared here`);
    for (const f of matches) {
      this.db.removeSharedPath(f.path);
      if (path.dirname(f.path) === this.shareDir) {
        this.excluded.add(f.path);
        this.db.setExcluded(f.path, true);
      }
      this.drop(f.path);
    }
    return matches;
  }

  /** A downloaded, verified file: shared at once, with the manifest already known (no re-hash). */
  async addVerified(p: string, encoded: Buffer, id: string): Promise<SharedFile> {
    const st = await fsp.stat(p);
    this.db.putManifest({ path: p, size: st.size, mtimeMs: st.mtimeMs, id, manifest: encoded });
    if (path.dirname(p) !== this.shareDir) this.db.addSharedPath(p);
    if (this.excluded.delete(p)) this.db.setExcluded(p, false);
    await this.scanning;
    return this.ensure(p);
  }

  /** The file at `p` no longer matches its manifest: hash it again (its id changes). */
  async recheck(p: string): Promise<void> {
    this.db.forgetManifest(p);
    const f = this.deleteEntry(p);
    if (f) this.emit('removed', f);
    await this.rescan();
  }
}
