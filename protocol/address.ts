import net from 'node:net';
import { P2PError } from './errors.js';
import { PEER_ID_PATTERN } from './identity.js';

export interface Address {
  host: string;
  port: number;
}

/**
 * Parses `HOST:PORT` or `[IPv6]:PORT`. Port 0 is allowed only where `allowZero` says so (listen addresses).
 * Anything else is P2P_BAD_ADDRESS, naming the text.
 */
export function parseAddress(text: string, allowZero = false): Address {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (!m) throw new P2PError('P2P_BAD_ADDRESS', `'${text}' is not HOST:PORT (use [::1]:PORT for IPv6)`);
  const host = m[1]!;
  const port = Number(m[2]);
  if (m[0].startsWith('[') && !net.isIPv6(host)) throw new P2PError('P2P_BAD_ADDRESS', `'${host}' is not an IPv6 address`);
  if (!Number.isInteger(port) || port > 65535 || (port === 0 && !allowZero)) {
    throw new P2PError('P2P_BAD_ADDRESS', `'${text}' has no valid port (1-65535)`);
  }
  return { host, port };
}

export function parseAddressList(text: string): Address[] {
  const parts = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) throw new P2PError('P2P_BAD_ADDRESS', 'expected at least one HOST:PORT');
  return parts.map((p) => parseAddress(p));
}

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

export { formatAddress } from './connection.js';
