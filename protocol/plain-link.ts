/**
 * Plain chunk links: on a network its operator trusts, two peers that both run with
 * `--plain-chunk-links` move chunks over TCP without TLS (README.md, section 6). What TLS did for the
 * handshake is done here by a signature: the seeder sends a fresh nonce, and the downloader signs it
 * together with the key of the seeder it meant to reach, so the proof is good for that one connection to
 * that one seeder. Nothing is encrypted and the seeder proves nothing at the start; every chunk still comes
 * with the seeder's signed receipt and is checked against the manifest, so bad data is still caught and
 * still proven.
 */
import { randomBytes } from 'node:crypto';

/** The first byte of every TLS connection (a handshake record); a frame of ours never starts with it. */
export const TLS_HANDSHAKE_RECORD = 0x16;

const CONTEXT = Buffer.from('p2pshare plain chunk link v1\0');

/** What the downloader signs on a plain link: the seeder's nonce and the seeder's own key. */
export function plainAuthPayload(nonce: Buffer, serverKey: Buffer): Buffer {
  return Buffer.concat([CONTEXT, nonce, serverKey]);
}

export function plainNonce(): Buffer {
  return randomBytes(32);
}
