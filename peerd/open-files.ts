/**
 * Files the chunk server reads from, kept open between chunks: opening and closing a file for every
 * 1 MiB chunk cost a seeder about a tenth of its time. At most `max` stay open; the least recently used
 * idle one is closed first. A handle in use is never closed under its reader: a forgotten or evicted
 * handle closes when its last reader is done.
 */
import fsp from 'node:fs/promises';

interface Entry {
  readonly opening: Promise<fsp.FileHandle>;
  users: number;
  /** Forgotten or evicted while in use: close when the last user is done. */
  retired: boolean;
}

export class OpenFiles {
  /** In least recently used order (a Map keeps insertion order; a use moves the entry to the end). */
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly max = 64) {}

  get size(): number {
    return this.entries.size;
  }

  /** Runs `fn` with an open handle of `filePath` (opened read-only on first use). */
  async use<T>(filePath: string, fn: (fh: fsp.FileHandle) => Promise<T>): Promise<T> {
    let entry = this.entries.get(filePath);
    if (entry) {
      this.entries.delete(filePath);
    } else {
      entry = { opening: fsp.open(filePath, 'r'), users: 0, retired: false };
      // A failed open must not stay cached (the file may appear later).
      entry.opening.catch(() => {
        if (this.entries.get(filePath) === entry) this.entries.delete(filePath);
      });
    }
    this.entries.set(filePath, entry);
    entry.users++;
    this.evict();
    try {
      return await fn(await entry.opening);
    } finally {
      entry.users--;
      if (entry.retired && entry.users === 0) closeQuietly(entry);
    }
  }

  /** `filePath` changed, moved or is no longer served: drop its handle (closed once idle). */
  forget(filePath: string): void {
    const entry = this.entries.get(filePath);
    if (!entry) return;
    this.entries.delete(filePath);
    this.retire(entry);
  }

  closeAll(): void {
    for (const entry of this.entries.values()) this.retire(entry);
    this.entries.clear();
  }

  private evict(): void {
    if (this.entries.size <= this.max) return;
    for (const [p, entry] of this.entries) {
      if (this.entries.size <= this.max) return;
      if (entry.users > 0) continue;
      this.entries.delete(p);
      this.retire(entry);
    }
  }

  private retire(entry: Entry): void {
    entry.retired = true;
    if (entry.users === 0) closeQuietly(entry);
  }
}

function closeQuietly(entry: Entry): void {
  entry.opening.then((fh) => fh.close()).catch(() => undefined);
}
