/**
 * Blacklist targets: a peer id or an IP address, in one canonical spelling, so a ban and the address a
 * connection comes from compare equal however each was written (the tracker's list, and each peer's copy).
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { P2PError } from './errors.js';
import { PEER_ID_PATTERN } from './identity.js';

/** A blacklist target is a peer id (40 hex characters) or an IP address, in one canonical spelling. */
export function normalizeTarget(target: string): string {
  const t = target.trim().toLowerCase();
  if (PEER_ID_PATTERN.test(t)) return t;
  const ip = t.startsWith('::ffff:') && net.isIPv4(t.slice(7)) ? t.slice(7) : t;
  if (net.isIPv4(ip)) return ip;
  if (net.isIPv6(ip)) return canonicalIPv6(ip);
  throw new P2PError('P2P_BAD_REQUEST', `'${target}' is neither a peer id (40 hex characters) nor an IP address`);
}

function canonicalIPv6(ip: string): string {
  // Let the URL parser do RFC 5952 compression, so "::0001" and "::1" are one entry.
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

export function normalizeHostForMatch(host: string): string {
  try {
    return normalizeTarget(host);
  } catch {
    return host;
  }
}

/**
 * The version of a blacklist that BLACKLIST_SYNC compares: a digest of its targets (SHA-256, hex, of the
 * targets in code-unit order, each ended by a newline). Two lists with one digest hold the same targets,
 * whoever computed it: a tracker of any cluster, or a peer from the copy it kept across a restart.
 * `sorted` must be sorted (the default Array sort) and hold each target once.
 */
export function blacklistDigest(sorted: readonly string[]): string {
  return createHash('sha256').update(sorted.length === 0 ? '' : `${sorted.join('\n')}\n`).digest('hex');
}
