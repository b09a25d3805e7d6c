/**
 * A file's manifest: its size, chunk size and the SHA-256 of every chunk. The file id is the SHA-256 of the
 * encoded manifest, so a manifest fetched from anyone can be checked against the id before it is trusted.
 *
 *   "P2PM" | u8 version (1) | u64 size | u32 chunkSize | u32 chunkCount | chunkCount x 32-byte SHA-256
 */
import { createHash } from 'node:crypto';
import { MalformedMessageError } from './errors.js';

export const CHUNK_SIZE = 1024 * 1024;
const MAGIC = Buffer.from('P2PM');
const HEAD_BYTES = 4 + 1 + 8 + 4 + 4;

export interface Manifest {
  readonly size: number;
  readonly chunkSize: number;
  readonly hashes: readonly Buffer[];
}

export function chunkCount(size: number, chunkSize: number): number {
  return size === 0 ? 0 : Math.ceil(size / chunkSize);
}

/** Bytes in chunk `index` (the last one may be short). */
export function chunkLength(m: Pick<Manifest, 'size' | 'chunkSize'>, index: number): number {
  return Math.min(m.chunkSize, m.size - index * m.chunkSize);
}

export function encodeManifest(m: Manifest): Buffer {
  const buf = Buffer.allocUnsafe(HEAD_BYTES + 32 * m.hashes.length);
  MAGIC.copy(buf, 0);
  buf[4] = 1;
  buf.writeBigUInt64BE(BigInt(m.size), 5);
  buf.writeUInt32BE(m.chunkSize, 13);
  buf.writeUInt32BE(m.hashes.length, 17);
  m.hashes.forEach((h, i) => h.copy(buf, HEAD_BYTES + 32 * i));
  return buf;
}

/**
 * A manifest's header, checked with every rule of decodeManifest (the length included) but without copying
 * its hashes: an 8 MiB manifest holds 262,144 of them, and a tracker checking a report needs a few.
 */
export function manifestHead(buf: Buffer): { size: number; chunkSize: number; count: number } {
  if (buf.length < HEAD_BYTES || !buf.subarray(0, 4).equals(MAGIC) || buf[4] !== 1) throw new MalformedMessageError('manifest header');
  const size = Number(buf.readBigUInt64BE(5));
  const chunkSize = buf.readUInt32BE(13);
  const count = buf.readUInt32BE(17);
  if (!Number.isSafeInteger(size) || chunkSize === 0 || count !== chunkCount(size, chunkSize) || buf.length !== HEAD_BYTES + 32 * count) {
    throw new MalformedMessageError('manifest: size, chunk size and hash count disagree');
  }
  return { size, chunkSize, count };
}

/** The hash of chunk `index` of an encoded manifest that passed manifestHead, as a view (undefined past the end). */
export function manifestHashAt(buf: Buffer, index: number): Buffer | undefined {
  const at = HEAD_BYTES + 32 * index;
  return index >= 0 && at + 32 <= buf.length ? buf.subarray(at, at + 32) : undefined;
}

export function decodeManifest(buf: Buffer): Manifest {
  const { size, chunkSize, count } = manifestHead(buf);
  const hashes: Buffer[] = [];
  for (let i = 0; i < count; i++) hashes.push(Buffer.from(buf.subarray(HEAD_BYTES + 32 * i, HEAD_BYTES + 32 * (i + 1))));
  return { size, chunkSize, hashes };
}

export function sha256(data: Buffer | Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

export function manifestId(encoded: Buffer): Buffer {
  return sha256(encoded);
}

/** Checks a manifest fetched from a peer against the file id it was asked for. */
export function verifyManifest(encoded: Buffer, fileId: Buffer): Manifest | undefined {
  if (!manifestId(encoded).equals(fileId)) return undefined;
  try {
    return decodeManifest(encoded);
  } catch {
    return undefined;
  }
}
