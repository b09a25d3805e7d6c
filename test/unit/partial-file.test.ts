import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { PartialFile, partialPathFor, type PartialFileOptions, type PartialHandle } from '../../peerd/partial-file.js';
import { VirtualClock, encodeManifest, sha256, type Manifest } from '../../protocol/index.js';
import type { Tap } from '../helpers/tap.js';


const CHUNK = 1024;
const FILE_ID = 'ab'.repeat(32);

/** The resume journal as PeerDb keeps it, in memory; every journal write is recorded and can be awaited. */
class FakeDb {
  record: { partPath: string; target: string; name: string; manifest: Buffer; chunks: Set<number> } | undefined;
  readonly batches: number[][] = [];
  finished = false;
  events: string[];
  private waiters: Array<() => void> = [];
  constructor(events: string[]) {
    this.events = events;
  }
  partial(fileId: string) {
    void fileId;
    return this.record && { ...this.record, chunks: [...this.record.chunks].sort((a, b) => a - b) };
  }
  startPartial(fileId: string, partPath: string, target: string, name: string, manifest: Buffer): void {
    void fileId;
    this.record = { partPath, target, name, manifest, chunks: new Set() };
  }
  journalChunks(fileId: string, chunks: number[]): void {
    void fileId;
    for (const c of chunks) this.record!.chunks.add(c);
    this.batches.push([...chunks]);
    this.events.push(`journal ${chunks.join(',')}`);
    for (const w of this.waiters.splice(0)) w();
  }
  finishPartial(fileId: string): void {
    void fileId;
    this.record = undefined;
    this.finished = true;
  }
  /** Resolves once `n` journal batches have been written in all. */
  async batchesWritten(n: number): Promise<void> {
    while (this.batches.length < n) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }
}

/**
 * A real file handle whose datasyncs can be held back and counted (and made to fail), and whose writes can
 * be cut short, as a positional write may be.
 */
class Disk {
  readonly events: string[] = [];
  syncs = 0;
  syncing = 0;
  maxConcurrentSyncs = 0;
  holdSyncs = false;
  failSyncs = false;
  maxWriteBytes = Infinity;
  writeCalls = 0;
  writing = 0;
  maxConcurrentWrites = 0;
  private held: Array<() => void> = [];
  open = async (file: string, flags: number, mode?: number): Promise<PartialHandle> => {
    const fh = await fsp.open(file, flags, mode);
    const disk = this;
    return {
      read: fh.read.bind(fh) as PartialHandle['read'],
      stat: fh.stat.bind(fh) as PartialHandle['stat'],
      truncate: (len?: number) => fh.truncate(len),
      close: () => fh.close(),
      writev: (async (buffers: Buffer[], position: number) => {
        // A short write: only the first `maxWriteBytes` of what was asked.
        let budget = disk.maxWriteBytes;
        const cut: Buffer[] = [];
        for (const b of buffers) {
          if (budget <= 0) break;
          cut.push(b.subarray(0, Math.min(b.length, budget)));
          budget -= b.length;
        }
        disk.writing++;
        disk.maxConcurrentWrites = Math.max(disk.maxConcurrentWrites, disk.writing);
        try {
          const r = await fh.writev(cut, position);
          disk.events.push(`wrote ${position / CHUNK}+${r.bytesWritten}`);
          disk.writeCalls++;
          return r;
        } finally {
          disk.writing--;
        }
      }) as PartialHandle['writev'],
      datasync: async () => {
        disk.syncs++;
        disk.syncing++;
        disk.maxConcurrentSyncs = Math.max(disk.maxConcurrentSyncs, disk.syncing);
        disk.events.push('sync start');
        try {
          if (disk.holdSyncs) await new Promise<void>((resolve) => disk.held.push(resolve));
          if (disk.failSyncs) throw new Error('EIO: i/o error, fdatasync');
          await fh.datasync();
        } finally {
          disk.syncing--;
          disk.events.push('sync end');
        }
      },
    };
  };
  /** Lets held syncs go on (once they have started). */
  async release(): Promise<void> {
    while (this.held.length === 0) await new Promise((r) => setImmediate(r));
    for (const r of this.held.splice(0)) r();
  }
}

interface Setup {
  dir: string;
  target: string;
  data: Buffer;
  manifest: Manifest;
  db: FakeDb;
  disk: Disk;
  clock: VirtualClock;
  open(extra?: Partial<PartialFileOptions>): Promise<PartialFile>;
  chunk(i: number): Buffer;
}

function setup(t: Tap, chunks = 8, lastChunkBytes = CHUNK, chunkSize = CHUNK): Setup {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-partial-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const data = randomBytes((chunks - 1) * chunkSize + lastChunkBytes);
  const hashes = Array.from({ length: chunks }, (_, i) => sha256(data.subarray(i * chunkSize, (i + 1) * chunkSize)));
  const manifest: Manifest = { size: data.length, chunkSize, hashes };
  const disk = new Disk();
  const db = new FakeDb(disk.events);
  const clock = new VirtualClock();
  const target = path.join(dir, 'film.bin');
  return {
    dir,
    target,
    data,
    manifest,
    db,
    disk,
    clock,
    chunk: (i) => data.subarray(i * chunkSize, (i + 1) * chunkSize),
    open: (extra = {}) =>
      PartialFile.open({ fileId: FILE_ID, target, name: 'film.bin', manifest, encodedManifest: encodeManifest(manifest), db, clock, openFile: disk.open, ...extra }),
  };
}

t.test('a new partial file: created hidden next to the target at full size, and registered for resuming', async (t) => {
  const s = setup(t, 3, 100);
  const f = await s.open();
  t.equal(f.path, partialPathFor(s.target, FILE_ID));
  t.equal(path.basename(f.path), `.film.bin.${FILE_ID.slice(0, 12)}.part`);
  t.equal(fs.statSync(f.path).size, s.data.length, 'the size of the file');
  t.equal(f.resume, undefined, 'nothing to resume');
  t.equal(s.db.record?.partPath, f.path, 'the journal knows the partial file');
  await f.close();
});

t.test('chunks are written whole at their place, even when the disk takes less at a time; finish renames into place', async (t) => {
  const s = setup(t, 5, 300);
  s.disk.maxWriteBytes = 100;
  const f = await s.open();
  for (const i of [4, 0, 2, 1, 3]) await f.write(i, s.chunk(i));
  t.ok(s.disk.events.includes('wrote 4+100') && s.disk.events.includes('wrote 0+100'), 'short writes happened');
  const syncsBefore = s.disk.syncs;
  await f.finish();
  t.equal(s.disk.syncs - syncsBefore, 1, 'one datasync at the end');
  t.ok(fs.readFileSync(s.target).equals(s.data), 'the target is byte-identical');
  t.notOk(fs.existsSync(f.path), 'the partial file is gone');
  t.ok(s.db.finished, 'the journal is forgotten');
  await f.close(); // after finish: nothing left to do
  await t.rejects(f.write(0, s.chunk(0)), { code: 'P2P_INTERNAL' }, 'no writes after finish');
});

t.test("a download's first chunk is written at once on a real file; the rest, and a disk without that, go through the writer", async (t) => {
  const s = setup(t, 4, 500);
  // The daemon's own way of opening: a real file handle, which can write synchronously.
  const f = await s.open({ openFile: undefined });
  const written = f.write(1, s.chunk(1), { now: true });
  const fd = fs.openSync(f.path, 'r');
  t.teardown(() => fs.closeSync(fd));
  const onDisk = Buffer.alloc(s.chunk(1).length);
  fs.readSync(fd, onDisk, 0, onDisk.length, CHUNK);
  t.ok(onDisk.equals(s.chunk(1)), 'the chunk is in the file before the write promise has even settled');
  await written;
  await Promise.all([0, 2, 3].map((i) => f.write(i, s.chunk(i), { now: i === 2 })));
  await f.finish();
  t.ok(fs.readFileSync(s.target).equals(s.data), 'the whole file arrives intact, the journal and the final sync as usual');
  t.ok(s.db.finished, 'and the journal is forgotten');

  // A handle without a synchronous write (here the test's disk) takes the writer's way, whatever is asked.
  const s2 = setup(t, 2, 500);
  const g = await s2.open();
  await g.write(0, s2.chunk(0), { now: true });
  t.same(s2.disk.events.filter((e) => e.startsWith('wrote')), ['wrote 0+' + CHUNK], 'written by the writer');
  await g.close();
});

t.test('one write call at a time (no two threads queue on the file), neighbours written together', async (t) => {
  const s = setup(t, 8, 1000);
  const f = await s.open();
  // Chunks arrive out of order and all at once, as verified chunks from several peers do.
  const order = [5, 0, 7, 1, 2, 6, 3, 4];
  await Promise.all(order.map((i) => f.write(i, s.chunk(i))));
  t.equal(s.disk.maxConcurrentWrites, 1, 'never two writes at once');
  t.ok(s.disk.writeCalls < order.length, `fewer write calls (${s.disk.writeCalls}) than chunks (${order.length})`);
  await f.finish();
  t.ok(fs.readFileSync(s.target).equals(s.data), 'every byte where it belongs');
});

t.test('the journal: not before 2 s have passed, then everything written is synced and journaled', async (t) => {
  const s = setup(t);
  const f = await s.open();
  await f.write(0, s.chunk(0));
  s.clock.advance(1000);
  await f.write(1, s.chunk(1));
  s.clock.advance(999);
  await f.write(2, s.chunk(2));
  t.equal(s.disk.syncs, 0, 'no sync within the first 2 s');
  t.same(s.db.batches, [], 'nothing journaled yet');
  s.clock.advance(1);
  await s.db.batchesWritten(1);
  t.same(s.db.batches, [[0, 1, 2]], 'one batch at 2 s, with every chunk written so far');
  t.equal(s.disk.syncs, 1, 'one datasync for it');
  await f.write(3, s.chunk(3));
  s.clock.advance(1999);
  await f.write(4, s.chunk(4));
  t.equal(s.disk.syncs, 1, 'the next is 2 s after that one');
  s.clock.advance(1);
  await s.db.batchesWritten(2);
  t.same(s.db.batches[1], [3, 4]);
  await f.close();
});

t.test('a download that stalls still journals what it wrote, once the 2 s are up', async (t) => {
  const s = setup(t);
  const f = await s.open();
  await f.write(5, s.chunk(5));
  s.clock.advance(1999);
  t.equal(s.disk.syncs, 0);
  s.clock.advance(1);
  await s.db.batchesWritten(1);
  t.same(s.db.batches, [[5]], 'journaled by the timer, without another write');
  await f.close();
});

t.test('the journal: at once when 16 MiB (here 3 chunks) wait, whatever the clock says', async (t) => {
  const s = setup(t);
  const f = await s.open({ journalMaxBytes: 3 * CHUNK });
  await f.write(0, s.chunk(0));
  await f.write(1, s.chunk(1));
  t.equal(s.disk.syncs, 0);
  await f.write(2, s.chunk(2));
  await s.db.batchesWritten(1);
  t.same(s.db.batches, [[0, 1, 2]]);
  await f.close();
});

t.test('a fast download is written back as it goes: by its end, all but the last few MiB are synced and journaled', async (t) => {
  const MIB = 1024 * 1024;
  const s = setup(t, 48, MIB, MIB); // the default journal settings, and a clock that never reaches the 2 s
  const f = await s.open();
  for (let i = 0; i < 48; i++) await f.write(i, s.chunk(i));
  await s.db.batchesWritten(2);
  const journaled = (): number => s.db.batches.reduce((n, b) => n + b.length, 0);
  t.ok(journaled() >= 32, `${journaled()} of 48 MiB on disk and journaled before the download ends`);
  const syncsBefore = s.disk.syncs;
  await f.finish();
  t.ok(s.disk.syncs - syncsBefore <= 2, 'finishing syncs only what is left');
  t.ok(fs.readFileSync(s.target).equals(s.data), 'the target is byte-identical');
});

t.test('one datasync at a time; writes go on while it runs; a chunk is journaled only after a sync that started after its write', async (t) => {
  const s = setup(t, 12);
  s.disk.holdSyncs = true;
  const f = await s.open({ journalMaxBytes: 2 * CHUNK });
  await f.write(0, s.chunk(0));
  await f.write(1, s.chunk(1)); // 2 chunks wait: a sync starts, and is held
  for (let i = 2; i < 8; i++) await f.write(i, s.chunk(i)); // writes carry on meanwhile
  s.clock.advance(5000);
  await f.write(8, s.chunk(8));
  t.equal(s.disk.syncs, 1, 'a single sync so far, although more is due');
  t.same(s.db.batches, [], 'nothing journaled before its sync ends');
  await s.disk.release();
  await s.db.batchesWritten(1);
  t.same(s.db.batches[0], [0, 1], 'the first sync covers the chunks written before it started');
  await s.disk.release(); // the one that was due meanwhile
  await s.db.batchesWritten(2);
  t.same(s.db.batches[1], [2, 3, 4, 5, 6, 7, 8], 'the next covers the rest');
  t.equal(s.disk.maxConcurrentSyncs, 1, 'never two datasyncs at once');
  // The crash-safety rule, from the order of events: every journaled chunk was written before the start of
  // the sync that ended before its journal entry.
  const ev = s.disk.events;
  for (const [b, batch] of s.db.batches.entries()) {
    const journalAt = ev.indexOf(`journal ${batch.join(',')}`);
    const syncStart = ev.lastIndexOf('sync start', ev.lastIndexOf('sync end', journalAt));
    for (const c of batch) t.ok(ev.indexOf(`wrote ${c}+${CHUNK}`) < syncStart, `batch ${b}: chunk ${c} was written before its sync began`);
  }
  s.disk.holdSyncs = false;
  await f.close();
});

t.test('close waits for writes under way, journals them after one datasync, and is safe to call twice', async (t) => {
  const s = setup(t);
  const f = await s.open();
  const writes = [0, 1, 2].map((i) => f.write(i, s.chunk(i)));
  const closed = f.close();
  await t.rejects(f.write(3, s.chunk(3)), { code: 'P2P_INTERNAL' }, 'no writes once closing');
  await Promise.all(writes);
  await closed;
  await f.close();
  t.same(s.db.batches.map((b) => [...b].sort()), [[0, 1, 2]], 'the writes under way were journaled');
  t.equal(s.disk.syncs, 1);
  t.ok(fs.existsSync(f.path), 'the partial file is kept for resuming');
  t.notOk(fs.existsSync(s.target));
});

t.test('a failed datasync: nothing it covered is journaled, and the download cannot finish or write on', async (t) => {
  const s = setup(t);
  s.disk.failSyncs = true;
  const f = await s.open({ journalMaxBytes: 2 * CHUNK });
  await f.write(0, s.chunk(0));
  await f.write(1, s.chunk(1));
  await new Promise<void>((resolve) => {
    const check = (): void => void setImmediate(() => (s.disk.events.includes('sync end') ? resolve() : check()));
    check();
  });
  await t.rejects(f.write(2, s.chunk(2)), { code: 'P2P_INTERNAL', message: /cannot sync/ }, 'the next write is refused');
  await t.rejects(f.finish(), { code: 'P2P_INTERNAL' }, 'so is finishing');
  s.disk.failSyncs = false;
  await f.close();
  t.same(s.db.batches, [], 'never journaled (a resume checks these chunks against the manifest)');
  t.notOk(fs.existsSync(s.target), 'nothing renamed into place');
});

t.test('resume: journaled chunks are trusted, unjournaled ones verified from disk, torn and empty ones fetched again', async (t) => {
  const s = setup(t, 8, 500);
  const first = await s.open();
  await first.write(0, s.chunk(0));
  await first.write(1, s.chunk(1));
  await first.write(7, s.chunk(7));
  s.clock.advance(2000);
  await s.db.batchesWritten(1);
  await first.write(3, s.chunk(3)); // written, not journaled: the state a kill -9 between two syncs leaves
  await first.write(5, s.chunk(5));
  // A torn chunk 4 and a wrong chunk 6, written behind the partial file's back.
  const fd = fs.openSync(first.path, 'r+');
  fs.writeSync(fd, s.chunk(4).subarray(0, 100), 0, 100, 4 * CHUNK);
  fs.writeSync(fd, randomBytes(CHUNK), 0, CHUNK, 6 * CHUNK);
  fs.closeSync(fd);
  // Crash: the handle is dropped without journaling (close would journal 3 and 5).
  s.disk.failSyncs = true;
  await first.close();
  s.disk.failSyncs = false;
  t.same([...s.db.record!.chunks].sort(), [0, 1, 7], 'the journal lists the synced chunks only');

  const syncs = s.disk.syncs;
  const again = await s.open();
  t.same(again.resume, { journaled: 3, recovered: 2, chunks: [0, 1, 3, 5, 7] }, 'chunks 3 and 5 recovered by hashing; 2, 4 and 6 are not trusted');
  t.equal(s.disk.syncs - syncs, 1, 'one datasync before the recovered chunks are journaled');
  t.same([...s.db.record!.chunks].sort(), [0, 1, 3, 5, 7]);
  for (const i of [2, 4, 6]) await again.write(i, s.chunk(i));
  await again.finish();
  t.ok(fs.readFileSync(s.target).equals(s.data), 'intact');
});

t.test('a partial file of the wrong size, or another download\'s, is started afresh', async (t) => {
  const s = setup(t);
  const f = await s.open();
  await f.write(0, s.chunk(0));
  await f.write(1, s.chunk(1));
  s.clock.advance(2000);
  await s.db.batchesWritten(1);
  await f.close();
  fs.truncateSync(f.path, 10);
  const g = await s.open();
  t.equal(g.resume, undefined, 'not resumed');
  t.equal(s.db.record?.chunks.size, 0, 'the old journal is dropped');
  t.equal(fs.statSync(g.path).size, s.data.length);
  await g.close();
});

t.test('resume is abandoned at once when the download is aborted while chunks are checked', async (t) => {
  const s = setup(t);
  const f = await s.open();
  await f.write(3, s.chunk(3));
  await f.close();
  const ac = new AbortController();
  ac.abort();
  await t.rejects(s.open({ signal: ac.signal }), { name: 'AbortError' });
});

t.test('the final datasync failing: finish refuses, nothing is renamed into place, the partial file stays', async (t) => {
  const s = setup(t, 2);
  const f = await s.open();
  await f.write(0, s.chunk(0));
  await f.write(1, s.chunk(1));
  s.disk.failSyncs = true;
  await t.rejects(f.finish(), { code: 'P2P_INTERNAL', message: /cannot sync/ });
  await f.close();
  t.notOk(fs.existsSync(s.target));
  t.ok(fs.existsSync(f.path));
  t.same(s.db.batches, [], 'and nothing was journaled after the failed sync');
});

t.test('a database that is already closed (the daemon shutting down) does not break closing', async (t) => {
  const s = setup(t);
  const f = await s.open();
  await f.write(0, s.chunk(0));
  s.db.journalChunks = () => {
    throw new TypeError('The database connection is not open');
  };
  await f.close();
  t.equal(s.disk.syncs, 1, 'synced; the chunk is checked again at resume instead');
});

t.test('issue 10: a new partial file and the finished rename are made durable by syncing their folder', async (t) => {
  const s = setup(t, 2);
  const syncs: Array<{ folder: string; partialRegistered: boolean; renamed: boolean; journalForgotten: boolean }> = [];
  const syncFolder = async (folder: string): Promise<void> => {
    syncs.push({
      folder,
      partialRegistered: s.db.record !== undefined,
      renamed: fs.existsSync(s.target) && !fs.existsSync(partialPathFor(s.target, FILE_ID)),
      journalForgotten: s.db.finished,
    });
  };
  const f = await s.open({ syncFolder });
  t.same(syncs, [{ folder: s.dir, partialRegistered: false, renamed: false, journalForgotten: false }], 'the new name is synced from the start');
  await f.write(0, s.chunk(0));
  await f.write(1, s.chunk(1));
  await f.finish();
  t.equal(syncs.length, 2);
  t.same(syncs[1], { folder: s.dir, partialRegistered: true, renamed: true, journalForgotten: false }, 'after the rename, before the journal is dropped');
});

t.test('the download starts while the new name is synced, and nothing is journaled against it before', async (t) => {
  const s = setup(t, 4);
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const f = await s.open({ syncFolder: () => held, journalMaxBytes: 2 * CHUNK });
  await f.write(0, s.chunk(0));
  await f.write(1, s.chunk(1)); // 2 chunks wait: the file's datasync starts
  await new Promise<void>((resolve) => {
    const check = (): void => void setImmediate(() => (s.disk.events.includes('sync end') ? resolve() : check()));
    check();
  });
  t.same(s.db.batches, [], 'the data is synced, but its folder is not yet: not journaled');
  release();
  await s.db.batchesWritten(1);
  t.same(s.db.batches, [[0, 1]], 'journaled once the name is durable');
  await f.close();
});

t.test('issue 10: a folder sync that fails for real fails the download; the rename is not reported as durable', async (t) => {
  const s = setup(t, 1);
  let failing = false;
  const f = await s.open({
    syncFolder: async () => {
      if (failing) throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    },
  });
  await f.write(0, s.chunk(0));
  failing = true;
  await t.rejects(f.finish(), { message: /EIO/ });
  t.notOk(s.db.finished, 'the journal is kept');
});

t.test('a resumed partial file: its folder is synced again before the chunks recovered are journaled', async (t) => {
  const s = setup(t, 4);
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const first = await s.open({ syncFolder: () => held }); // its folder sync never ends: the daemon dies first
  await first.write(0, s.chunk(0));
  await first.write(1, s.chunk(1));
  t.same(s.db.batches, [], 'nothing journaled in the first run');
  const second = await s.open({
    syncFolder: async () => {
      s.disk.events.push('folder synced');
    },
  });
  t.same(second.resume?.chunks, [0, 1], 'the chunks on disk are recovered');
  const ev = s.disk.events;
  t.ok(ev.includes('folder synced') && ev.indexOf('folder synced') < ev.indexOf('journal 0,1'), 'the folder is synced before they are journaled');
  await second.close();
  release();
  await first.close();
});

t.test('a new name that cannot be made durable: nothing is journaled, and the download cannot write on or finish', async (t) => {
  const s = setup(t, 4);
  const f = await s.open({
    syncFolder: async () => {
      throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    },
    journalMaxBytes: 2 * CHUNK,
  });
  await f.write(0, s.chunk(0));
  await f.write(1, s.chunk(1));
  await new Promise<void>((resolve) => {
    const check = (): void => void setImmediate(() => (s.disk.events.includes('sync end') ? resolve() : check()));
    check();
  });
  await t.rejects(async () => {
    for (let i = 2; i < 4; i++) await f.write(i, s.chunk(i));
    await f.finish();
  }, { message: /EIO/ });
  await f.close();
  t.same(s.db.batches, [], 'never journaled');
  t.notOk(fs.existsSync(s.target), 'nothing renamed into place');
});

t.test('issue 10: a planted symlink in place of a new partial file is refused; the file it points to is untouched', async (t) => {
  const s = setup(t, 3);
  const victim = path.join(s.dir, 'victim.txt');
  fs.writeFileSync(victim, 'precious');
  fs.symlinkSync(victim, partialPathFor(s.target, FILE_ID));
  await t.rejects(s.open(), { code: 'P2P_UNSAFE_FILE', message: /is a symbolic link/ });
  t.equal(fs.readFileSync(victim, 'utf8'), 'precious', 'not truncated, not written');
  // A dangling one too: following it would create a file wherever it points.
  const elsewhere = path.join(s.dir, 'created-through-the-link');
  fs.unlinkSync(partialPathFor(s.target, FILE_ID));
  fs.symlinkSync(elsewhere, partialPathFor(s.target, FILE_ID));
  await t.rejects(s.open(), { code: 'P2P_UNSAFE_FILE' });
  t.notOk(fs.existsSync(elsewhere), 'nothing was created through a dangling link');
  t.equal(s.db.record, undefined, 'no journal was started');
});

t.test('issue 10: resuming refuses a partial file swapped for a symlink or given a second name; a stale one of ours is replaced', async (t) => {
  const s = setup(t, 3);
  const first = await s.open();
  await first.write(0, s.chunk(0));
  s.clock.advance(2000);
  await s.db.batchesWritten(1);
  await first.close();
  const part = first.path;

  // Swapped for a symlink to a file of the right size: resuming would trust and write into it.
  const victim = path.join(s.dir, 'victim.bin');
  const victimBytes = randomBytes(s.data.length);
  fs.writeFileSync(victim, victimBytes);
  fs.renameSync(part, `${part}.moved`);
  fs.symlinkSync(victim, part);
  await t.rejects(s.open(), { code: 'P2P_UNSAFE_FILE', message: /is a symbolic link/ }, 'a symlink is refused');
  t.ok(fs.readFileSync(victim).equals(victimBytes), 'the file it points to is untouched');

  // A hard link: the same inode has another name, which another user may have made to one of our files.
  fs.unlinkSync(part);
  fs.renameSync(`${part}.moved`, part);
  fs.linkSync(part, path.join(s.dir, 'second-name'));
  await t.rejects(s.open(), { code: 'P2P_UNSAFE_FILE', message: /has 2 names/ }, 'a partial file with two names is refused');
  fs.unlinkSync(path.join(s.dir, 'second-name'));

  const resumed = await s.open();
  t.same(resumed.resume?.chunks, [0], 'our own partial file resumes as before');
  await resumed.close();

  // A stale partial file of ours (the wrong size) is replaced by a new one, as before.
  fs.truncateSync(part, 5);
  const fresh = await s.open();
  t.equal(fresh.resume, undefined);
  t.equal(fs.statSync(part).size, s.data.length);
  await fresh.close();
});
