/**
 * The file a download writes into, and its resume journal. Verified chunks are written in place into
 * `.<name>.<id>.part` next to the target; the journal in the peer database lists the chunks known to be on
 * disk. The rule: a chunk is journaled only after a datasync that covers it, and after a sync of the folder
 * that made the partial file's name durable, so a crash can lose work but never makes a resumed download
 * trust bytes or a name that are not there. Chunks written but not yet journaled are not lost either: on
 * resume they are read back and kept if they still match the manifest.
 *
 * The journal is synced at most about every `journalIntervalMs` (2 s), and at once when
 * `journalMaxBytes` (16 MiB) are waiting. One datasync runs at a time, in libuv's pool, and writes carry
 * on meanwhile; while chunks come faster than the disk takes them, the syncs follow one another, so the
 * disk writes the file back during the download instead of after it. With 256 MiB, a 100 MiB download
 * ended with one datasync of the whole file: 200-240 ms of the lab's 1.4-1.6 s downloads at 8-20
 * seeders (the `written` and `synced` phases of the downloader's `download complete` log line; README,
 * "Network lab").
 *
 * The folder may be shared with other local users (`--out /tmp/...`), who can plant any name in it. So the
 * partial file is never opened through a symbolic link: a new one is created exclusively (O_EXCL, which
 * also refuses a symlink, even a dangling one), and an existing one is opened with O_NOFOLLOW and checked
 * (a regular file of ours with no other name) before a byte is written or trusted. Anything else is
 * refused with P2P_UNSAFE_FILE. The journal lives in the peer database inside the private `--data`.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { chunkLength, P2PError, sha256, systemClock, type Clock, type Manifest, type Timer } from '../protocol/index.js';
import { syncFolder } from '../protocol/local-files.js';
import type { PeerDb } from './db.js';

const { O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;

export const JOURNAL_DEFAULTS = {
  journalIntervalMs: 2000,
  journalMaxBytes: 16 * 1024 * 1024,
};

/** Where the partial file of a download to `target` lives (next to it, hidden). */
export function partialPathFor(target: string, fileId: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${fileId.slice(0, 12)}.part`);
}

/**
 * The file operations a partial file uses: a `fs.promises` FileHandle (tests wrap one to slow its syncs),
 * and where it has one, a synchronous positional write (see `write`'s `now`).
 */
export type PartialHandle = Pick<fsp.FileHandle, 'read' | 'writev' | 'datasync' | 'truncate' | 'close' | 'stat'> & {
  writevSync?: (buffers: Buffer[], position: number) => number;
};

/** A real file's handle, with the synchronous write on its descriptor. */
async function openHandle(file: string, flags: number, mode?: number): Promise<PartialHandle> {
  const fh = await fsp.open(file, flags, mode);
  return Object.assign(fh, { writevSync: (buffers: Buffer[], position: number) => fs.writevSync(fh.fd, buffers, position) });
}

/** Chunks next to each other in the file are written with one call, up to this many. */
const MAX_CHUNKS_PER_WRITE = 16;

interface QueuedWrite {
  index: number;
  data: Buffer;
  done(err?: Error): void;
}

export interface PartialFileOptions {
  /** The file id, hex. */
  fileId: string;
  target: string;
  name: string;
  manifest: Manifest;
  encodedManifest: Buffer;
  db: Pick<PeerDb, 'partial' | 'startPartial' | 'journalChunks' | 'finishPartial'>;
  clock?: Pick<Clock, 'now' | 'setTimeout'>;
  journalIntervalMs?: number;
  journalMaxBytes?: number;
  /** Stops the read-back of unjournaled chunks at resume (it reads the whole file). */
  signal?: AbortSignal;
  /** Test hook: opens the file (`flags` are the numeric O_* flags). */
  openFile?: (file: string, flags: number, mode?: number) => Promise<PartialHandle>;
  /** Test hook: makes a new or renamed entry of a folder durable (protocol/local-files.ts). */
  syncFolder?: (folder: string) => Promise<void>;
}

export interface ResumeInfo {
  /** Chunks the journal listed. */
  journaled: number;
  /** Chunks found on disk and verified although the journal did not list them (a crash between syncs). */
  recovered: number;
  /** Every chunk verified on disk at open. */
  chunks: number[];
}

export class PartialFile {
  readonly path: string;
  /** What was already on disk when an interrupted download was resumed; undefined for a new file. */
  readonly resume: ResumeInfo | undefined;
  private readonly clock: Pick<Clock, 'now' | 'setTimeout'>;
  private readonly intervalMs: number;
  private readonly maxBytes: number;
  /** Written, not yet covered by a datasync and the journal. */
  private unjournaled: number[] = [];
  private unjournaledBytes = 0;
  private lastJournalAt: number;
  private journalTimer: Timer | undefined;
  /** The one datasync-and-journal in progress. */
  private syncing: Promise<void> | undefined;
  private syncAgain = false;
  /**
   * A failed datasync (the written bytes may not be on disk) or folder sync (the file's name may not be):
   * nothing more is trusted or journaled.
   */
  private syncError: Error | undefined;
  private writesInFlight = 0;
  private writesIdle: Array<() => void> = [];
  /** Chunks waiting for the writer; one write call runs at a time (see write()). */
  private writeQueue: QueuedWrite[] = [];
  private writerRunning = false;
  /** Set by finish() or close(): no more writes. */
  private ending = false;
  private handleOpen = true;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly fh: PartialHandle,
    private readonly opts: PartialFileOptions,
    partPath: string,
    resume: ResumeInfo | undefined,
    /** Settles once the partial file's name is durable (its folder synced): with the error, if that failed. */
    private readonly named: Promise<Error | undefined>,
  ) {
    this.path = partPath;
    this.resume = resume;
    this.clock = opts.clock ?? systemClock;
    this.intervalMs = opts.journalIntervalMs ?? JOURNAL_DEFAULTS.journalIntervalMs;
    this.maxBytes = opts.journalMaxBytes ?? JOURNAL_DEFAULTS.journalMaxBytes;
    this.lastJournalAt = this.clock.now();
  }

  /**
   * Opens the partial file of a download: the one an interrupted download left (same place, right size,
   * a journal in the database), or a new one of the file's size.
   */
  static async open(opts: PartialFileOptions): Promise<PartialFile> {
    const m = opts.manifest;
    const partPath = partialPathFor(opts.target, opts.fileId);
    const openFile = opts.openFile ?? openHandle;
    const syncDir = (): Promise<void> => (opts.syncFolder ?? syncFolder)(path.dirname(partPath));
    const prior = opts.db.partial(opts.fileId);
    const resumed = prior !== undefined && prior.partPath === partPath ? await openToResume(openFile, partPath, m.size) : undefined;
    const fh = resumed ?? (await createExclusive(openFile, partPath));
    try {
      if (!resumed || !prior) {
        await fh.truncate(m.size);
        // The new name must be durable before any chunk is journaled against it, not before the first
        // chunk is asked for: the folder's sync (15-40 ms at 20 seeders in the lab, most of the time from
        // the manifest to the first request) runs while the download starts, and the journal waits for it.
        const named = syncDir().then(
          () => undefined,
          (err: unknown) => err as Error,
        );
        opts.db.startPartial(opts.fileId, partPath, opts.target, opts.name, opts.encodedManifest);
        return new PartialFile(fh, opts, partPath, undefined, named);
      }
      // The last run may have ended (killed, or its folder sync failed) before the name was durable:
      // sync the folder again before anything recovered is journaled against it.
      await syncDir();
      const onDisk = new Uint8Array(m.hashes.length);
      let journaled = 0;
      for (const c of prior.chunks) {
        if (c >= 0 && c < m.hashes.length && onDisk[c] === 0) {
          onDisk[c] = 1;
          journaled++;
        }
      }
      const recovered = await recoverUnjournaled(fh, m, onDisk, opts.signal);
      if (recovered.length > 0) {
        await fh.datasync();
        opts.db.journalChunks(opts.fileId, recovered);
      }
      const chunks: number[] = [];
      for (let i = 0; i < onDisk.length; i++) if (onDisk[i] === 1) chunks.push(i);
      return new PartialFile(fh, opts, partPath, { journaled, recovered: recovered.length, chunks }, Promise.resolve(undefined));
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Writes a whole verified chunk at its place; it is journaled with the next sync.
   *
   * One write call runs at a time: concurrent positional writes to one file all queue for its inode lock
   * (they spun on it for a fifth of a download's CPU in a profile), so chunks wait here instead, and those
   * that are next to each other in the file go out in one `pwritev`.
   */
  async write(index: number, data: Buffer, { now = false } = {}): Promise<void> {
    if (this.ending) throw new P2PError('P2P_INTERNAL', `${this.path} is closed; chunk ${index} not written`);
    if (this.syncError) throw this.syncError;
    this.writesInFlight++;
    try {
      if (now && this.fh.writevSync && !this.writerRunning && this.writeQueue.length === 0) {
        // Written here and now, on this thread (nothing else is being written): the writer's trip through
        // libuv's thread pool took 20-220 ms on a busy machine before a download's first byte.
        this.writeRunSync(index, data, this.fh.writevSync);
      } else {
        await new Promise<void>((resolve, reject) => {
          this.writeQueue.push({ index, data, done: (err) => (err ? reject(err) : resolve()) });
          if (!this.writerRunning) void this.runWriter();
        });
      }
      this.unjournaled.push(index);
      this.unjournaledBytes += data.length;
    } finally {
      this.writesInFlight--;
      if (this.writesInFlight === 0) for (const resolve of this.writesIdle.splice(0)) resolve();
    }
    if (!this.ending) this.journalIfDue();
  }

  private async runWriter(): Promise<void> {
    this.writerRunning = true;
    try {
      while (this.writeQueue.length > 0) {
        const batch = this.writeQueue.splice(0).sort((a, b) => a.index - b.index);
        for (let i = 0; i < batch.length; ) {
          let j = i + 1;
          while (j < batch.length && j - i < MAX_CHUNKS_PER_WRITE && batch[j]!.index === batch[j - 1]!.index + 1) j++;
          const run = batch.slice(i, j);
          i = j;
          try {
            await this.writeRun(run);
            for (const w of run) w.done();
          } catch (err) {
            for (const w of run) w.done(err as Error);
          }
        }
      }
    } finally {
      this.writerRunning = false;
    }
  }

  private writeRunSync(index: number, data: Buffer, writevSync: NonNullable<PartialHandle['writevSync']>): void {
    const position = index * this.opts.manifest.chunkSize;
    let written = 0;
    while (written < data.length) {
      const n = writevSync([data.subarray(written)], position + written);
      if (n === 0) throw new P2PError('P2P_INTERNAL', `writing chunk ${index} to ${this.path} made no progress`);
      written += n;
    }
  }

  /** Chunks with consecutive indexes, written at the first one's place (a write may write less than asked). */
  private async writeRun(run: QueuedWrite[]): Promise<void> {
    const position = run[0]!.index * this.opts.manifest.chunkSize;
    const buffers = run.map((w) => w.data);
    const total = buffers.reduce((n, b) => n + b.length, 0);
    let written = 0;
    while (written < total) {
      const { bytesWritten } = await this.fh.writev(written === 0 ? buffers : rest(buffers, written), position + written);
      if (bytesWritten === 0) throw new P2PError('P2P_INTERNAL', `writing chunk ${run[0]!.index} to ${this.path} made no progress`);
      written += bytesWritten;
    }
  }

  /**
   * The download is complete: waits for the journal, syncs the data once, closes the file, renames it into
   * place and forgets the journal.
   */
  async finish(): Promise<void> {
    this.ending = true;
    this.journalTimer?.cancel();
    await this.idle();
    this.syncError ??= await this.named;
    if (this.syncError) throw this.syncError;
    try {
      await this.fh.datasync();
    } catch (err) {
      throw (this.syncError = syncFailed(this.path, err));
    }
    this.handleOpen = false;
    await this.fh.close();
    await fsp.rename(this.path, this.opts.target);
    // Only the folder's own sync makes the rename survive a power loss; the journal goes after it.
    await (this.opts.syncFolder ?? syncFolder)(path.dirname(this.opts.target));
    this.opts.db.finishPartial(this.opts.fileId);
  }

  /**
   * Releases the file, keeping it for resuming: waits for writes under way, journals what they and earlier
   * writes put on disk (after a datasync), then closes the handle. Safe to call more than once, and after
   * finish().
   */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    this.ending = true;
    this.journalTimer?.cancel();
    if (!this.handleOpen) return;
    await this.idle();
    if (this.unjournaled.length > 0 && !this.syncError) {
      this.startJournal();
      await this.syncing;
    }
    this.handleOpen = false;
    await this.fh.close().catch(() => undefined);
  }

  /** No write and no sync under way. */
  private async idle(): Promise<void> {
    if (this.writesInFlight > 0) await new Promise<void>((resolve) => this.writesIdle.push(resolve));
    while (this.syncing) await this.syncing;
  }

  /** Journals when 2 s have passed since the last sync, or when 16 MiB wait; otherwise when the 2 s are up. */
  private journalIfDue(): void {
    if (this.unjournaled.length === 0 || this.syncError) return;
    const waitMs = this.lastJournalAt + this.intervalMs - this.clock.now();
    if (waitMs <= 0 || this.unjournaledBytes >= this.maxBytes) {
      this.journalTimer?.cancel();
      this.journalTimer = undefined;
      this.startJournal();
    } else if (!this.journalTimer) {
      // A download that stalls still journals what it wrote within the interval.
      this.journalTimer = this.clock.setTimeout(() => {
        this.journalTimer = undefined;
        if (!this.ending) this.journalIfDue();
      }, waitMs);
    }
  }

  private startJournal(): void {
    if (this.syncing) {
      this.syncAgain = true; // one datasync at a time; the next one covers what is written meanwhile
      return;
    }
    const batch = this.unjournaled;
    this.unjournaled = [];
    this.unjournaledBytes = 0;
    this.lastJournalAt = this.clock.now();
    this.syncing = this.syncAndJournal(batch).finally(() => {
      this.syncing = undefined;
      if (this.syncAgain) {
        this.syncAgain = false;
        if (!this.ending) this.journalIfDue();
      }
    });
  }

  private async syncAndJournal(batch: number[]): Promise<void> {
    try {
      await this.fh.datasync();
    } catch (err) {
      // After a failed sync the kernel may have dropped the written pages: trust none of them again.
      this.syncError = syncFailed(this.path, err);
      return;
    }
    const unnamed = await this.named;
    if (unnamed) {
      this.syncError = unnamed; // a crash could lose the file's name: journal nothing against it
      return;
    }
    try {
      this.opts.db.journalChunks(this.opts.fileId, batch);
    } catch {
      // The database is gone (the daemon is closing): these chunks are verified again at resume.
    }
  }
}

function syncFailed(file: string, err: unknown): P2PError {
  return new P2PError('P2P_INTERNAL', `cannot sync ${file}: ${(err as Error).message}; the partial file is kept and checked again when the download resumes`);
}

function unsafeFile(file: string, what: string): P2PError {
  return new P2PError(
    'P2P_UNSAFE_FILE',
    `${file} ${what}; nothing was written through it. Another user may have planted it in a shared folder: remove it, or download with --out into a folder only you can write to`,
  );
}

/** Why `st` is not a partial file this daemon may write and trust, or undefined when it is one. */
function notOurs(st: fs.Stats): string | undefined {
  if (st.isSymbolicLink()) return 'is a symbolic link';
  if (!st.isFile()) return 'is not a regular file';
  const uid = process.geteuid?.();
  if (uid !== undefined && st.uid !== uid) return `belongs to another user (uid ${st.uid})`;
  if (st.nlink !== 1) return `has ${st.nlink} names (hard links)`;
  return undefined;
}

/**
 * The partial file an interrupted download left, opened without following a symlink and checked on the
 * open handle (no window between the check and the use); undefined when it is gone or not of the file's
 * size (it is then replaced).
 */
async function openToResume(openFile: NonNullable<PartialFileOptions['openFile']>, partPath: string, size: number): Promise<PartialHandle | undefined> {
  let fh: PartialHandle;
  try {
    fh = await openFile(partPath, O_RDWR | O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    // O_NOFOLLOW on a symlink: ELOOP (Linux), EMLINK (FreeBSD).
    if (code === 'ELOOP' || code === 'EMLINK') throw unsafeFile(partPath, 'is a symbolic link');
    throw err;
  }
  try {
    const st = await fh.stat();
    const why = notOurs(st);
    if (why) throw unsafeFile(partPath, why);
    if (st.size === size) return fh;
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err;
  }
  await fh.close();
  return undefined;
}

/**
 * A new, empty partial file, created exclusively. A stale partial file of ours in its place (another
 * download's, or one of the wrong size) is removed first; anything else there is refused.
 */
async function createExclusive(openFile: NonNullable<PartialFileOptions['openFile']>, partPath: string): Promise<PartialHandle> {
  const flags = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW;
  try {
    return await openFile(partPath, flags, 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const why = notOurs(await fsp.lstat(partPath));
  if (why) throw unsafeFile(partPath, why);
  await fsp.unlink(partPath);
  try {
    return await openFile(partPath, flags, 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw unsafeFile(partPath, 'was created again by someone else while it was being replaced');
    throw err;
  }
}

/**
 * Chunks written after the last journal sync may be on disk already (a process that was killed leaves its
 * writes in the page cache). Each such chunk is read back and checked against the manifest; only the ones
 * that verify are kept. Never-written regions read as zeros and are skipped without hashing.
 */
async function recoverUnjournaled(fh: PartialHandle, m: Manifest, onDisk: Uint8Array, signal: AbortSignal | undefined): Promise<number[]> {
  const buf = Buffer.allocUnsafe(m.chunkSize);
  const zeros = Buffer.alloc(m.chunkSize);
  const recovered: number[] = [];
  for (let i = 0; i < m.hashes.length; i++) {
    if (onDisk[i] !== 0) continue;
    signal?.throwIfAborted();
    const len = chunkLength(m, i);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await fh.read(buf, got, len - got, i * m.chunkSize + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got !== len) continue;
    const data = buf.subarray(0, len);
    if (data.equals(zeros.subarray(0, len))) continue;
    if (!sha256(data).equals(m.hashes[i]!)) continue;
    onDisk[i] = 1;
    recovered.push(i);
  }
  return recovered;
}

/** The bytes of `buffers` after the first `skip`, as views. */
function rest(buffers: Buffer[], skip: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of buffers) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}
