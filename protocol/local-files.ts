/**
 * The daemons' own files on the local disk: a data folder only its user can enter, and renames that
 * survive a power loss. Shared by the tracker and the peer daemon; no policy about what goes in them.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import type { Logger } from 'pino';
import { P2PError } from './errors.js';

/**
 * Makes `dir` (and its parents) if missing, with mode 0700, and tightens an existing folder that others
 * may read, enter or write to 0700, with a warning: it holds keys, databases and the control socket.
 */
export function ensurePrivateDir(dir: string, log: Pick<Logger, 'warn'>): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.statSync(dir);
  if (!st.isDirectory()) throw new P2PError('P2P_UNSAFE_FILE', `${dir} is not a folder`);
  const mode = st.mode & 0o777;
  if ((mode & 0o077) === 0) return;
  try {
    fs.chmodSync(dir, 0o700);
  } catch (err) {
    throw new P2PError('P2P_UNSAFE_FILE', `${dir} has mode ${formatMode(mode)} and cannot be made private (0700): ${(err as Error).message}; chmod 700 it or choose another folder`);
  }
  log.warn({ dataDir: dir, mode: formatMode(mode), now: '0700' }, 'data folder was open to other users; tightened it to 0700');
}

/** 0o755 -> '0755'. */
function formatMode(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
}

/**
 * Errors of platforms and file systems that cannot sync a folder (or of a folder we may write in but not
 * open): the rename is still atomic, only its durability waits for the kernel's own writeback.
 */
const CANNOT_SYNC_FOLDER = new Set(['EINVAL', 'ENOTSUP', 'EOPNOTSUPP', 'EISDIR', 'EPERM', 'EACCES', 'EBADF']);

function folderSyncFailed(folder: string, err: unknown): P2PError {
  return new P2PError('P2P_INTERNAL', `cannot sync folder ${folder}: ${(err as Error).message}; a file just created or renamed there may not survive a power loss`, { cause: err });
}

/**
 * Makes the entries just created or renamed in `folder` durable (a rename changes the folder, not the
 * file: without this a power loss can undo it). A real failure (EIO) is thrown; a platform that cannot
 * sync folders is not an error.
 */
export async function syncFolder(folder: string): Promise<void> {
  let dir: fsp.FileHandle | undefined;
  try {
    dir = await fsp.open(folder, 'r');
    await dir.sync();
  } catch (err) {
    if (!CANNOT_SYNC_FOLDER.has((err as NodeJS.ErrnoException).code ?? '')) throw folderSyncFailed(folder, err);
  } finally {
    await dir?.close().catch(() => undefined);
  }
}

/** syncFolder, for code that runs before the event loop matters (a daemon's start). */
export function syncFolderSync(folder: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(folder, 'r');
    fs.fsyncSync(fd);
  } catch (err) {
    if (!CANNOT_SYNC_FOLDER.has((err as NodeJS.ErrnoException).code ?? '')) throw folderSyncFailed(folder, err);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
