import net from 'node:net';
import { P2PError } from './errors.js';

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

export { formatAddress } from './connection.js';
