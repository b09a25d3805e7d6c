/**
 * Which key to expect from a tracker, as SSH's known_hosts decides it: the id pinned for its address
 * (`ID@HOST:PORT`), else the key it proved on first contact, which is then kept. A key that differs is
 * refused with P2P_KEY_MISMATCH and a message that says what to do. Peers use it for their trackers, and
 * trackers for each other; where the learned keys are kept is the caller's (each daemon's own database).
 */
import { P2PError } from './errors.js';
import { peerIdOf, PEER_ID_PATTERN } from './identity.js';
import { parseAddress, type Address } from './address.js';
import { formatAddress } from './connection.js';


/** An address with, optionally, the id of the key it must prove (`ID@HOST:PORT`). */
export interface PinnedAddress extends Address {
  /** The pinned id (40 hex characters, as `p2p status` and the tracker's log show it), if any. */
  id?: string | undefined;
}

/** Parses `HOST:PORT`, `[IPv6]:PORT` or `ID@` followed by either. */
export function parsePinnedAddress(text: string): PinnedAddress {
  const at = text.indexOf('@');
  if (at < 0) return parseAddress(text);
  const id = text.slice(0, at).toLowerCase();
  if (!PEER_ID_PATTERN.test(id)) throw new P2PError('P2P_BAD_ADDRESS', `'${text.slice(0, at)}' is not a key id (40 hex characters, as the tracker logs it at start)`);
  return { ...parseAddress(text.slice(at + 1)), id };
}

export function parsePinnedAddressList(text: string): PinnedAddress[] {
  const parts = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) throw new P2PError('P2P_BAD_ADDRESS', 'expected at least one HOST:PORT');
  return parts.map(parsePinnedAddress);
}

/** Where learned keys are kept, by address (`HOST:PORT`). */
export interface KnownKeys {
  get(address: string): Buffer | undefined;
  learn(address: string, key: Buffer): void;
}

/**
 * Checks the key `target` proved in TLS (raw 32 bytes; undefined if it presented none). Returns 'learned'
 * when this was the first contact with an unpinned address (the key is now kept), 'known' otherwise.
 * `what` names the other side in messages ("tracker", "cluster member").
 */
export function checkPinnedKey(target: PinnedAddress, key: Buffer | undefined, known: KnownKeys, what: string, pinHint: string): 'learned' | 'known' {
  const label = formatAddress(target.host, target.port);
  if (!key) throw new P2PError('P2P_NOT_AUTHENTICATED', `${what} ${label} presented no key`);
  const id = peerIdOf(key);
  if (target.id) {
    if (id !== target.id) throw new P2PError('P2P_KEY_MISMATCH', `${what} ${label} proved key ${id}, but ${pinHint} pins ${target.id}: refusing it`);
    if (!known.get(label)?.equals(key)) known.learn(label, key);
    return 'known';
  }
  const before = known.get(label);
  if (before && !before.equals(key)) {
    throw new P2PError(
      'P2P_KEY_MISMATCH',
      `${what} ${label} now proves key ${id}, not the key ${peerIdOf(before)} it proved before: someone may be impersonating it; if it was reinstalled, pin its new key with ${id}@${label} in ${pinHint}`,
    );
  }
  if (before) return 'known';
  known.learn(label, key);
  return 'learned';
}
