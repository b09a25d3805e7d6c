/**
 * Who the other members of the cluster are. Every tracker link runs in TLS, where each side proves its
 * own Ed25519 key. The key of the member at rank r must be the one `--cluster` pins for it
 * (`ID@HOST:PORT`) or, without a pin, the one this tracker learned by dialling r's address on first
 * contact and keeps in its store (like SSH's known_hosts). A link that claims rank r is accepted only with
 * r's key: holding one `--cluster` address, or relaying a tracker's handshake, gets nobody in.
 */
import type { Logger } from 'pino';
import { checkPinnedKey, formatAddress, P2PError, peerIdOf, type KnownKeys, type PinnedAddress } from '../protocol/index.js';
import type { Store } from './store.js';

export class MemberKeys {
  private readonly known: KnownKeys;

  constructor(
    private readonly members: readonly PinnedAddress[],
    store: Store,
    private readonly log: Logger,
    now: () => number,
  ) {
    this.known = { get: (a) => store.knownKey(a), learn: (a, key) => store.learnKey(a, key, now()) };
  }

  /** Checks the key the tracker at rank `rank` proved when this tracker dialled it (throws to refuse). */
  checkDialled(rank: number, key: Buffer | undefined): void {
    const member = this.members[rank]!;
    if (checkPinnedKey(member, key, this.known, 'tracker', '--cluster') === 'learned') {
      const label = formatAddress(member.host, member.port);
      this.log.warn({ tracker: label, id: peerIdOf(key!) }, `learned the key of tracker ${label} on first contact (${peerIdOf(key!)}); pin it with ${peerIdOf(key!)}@${label} in --cluster`);
    }
  }

  /**
   * Checks the key of an incoming link that claims rank `rank`. A member whose key is neither pinned nor
   * learned yet is refused until this tracker has dialled it itself (the caller opens that link).
   */
  checkIncoming(rank: number, key: Buffer | undefined): void {
    const member = this.members[rank];
    if (!member) throw new P2PError('P2P_UNAUTHORIZED', `tracker link refused: no rank ${rank} in --cluster`);
    const label = formatAddress(member.host, member.port);
    if (!key) throw new P2PError('P2P_NOT_AUTHENTICATED', 'tracker link refused: it presented no key');
    const id = peerIdOf(key);
    const expected = member.id ?? (this.known.get(label) ? peerIdOf(this.known.get(label)!) : undefined);
    if (expected === undefined) throw new P2PError('P2P_UNAUTHORIZED', `tracker link refused: the key of rank ${rank} (${label}) is not known yet; this tracker dials it first`);
    if (id !== expected) {
      throw new P2PError('P2P_KEY_MISMATCH', `tracker link refused: it claims rank ${rank} (${label}) but proved key ${id}, not ${expected}`);
    }
  }

  /** The id of rank `rank`'s key, where pinned or learned. */
  idOf(rank: number): string | undefined {
    const member = this.members[rank];
    if (!member) return undefined;
    if (member.id) return member.id;
    const key = this.known.get(formatAddress(member.host, member.port));
    return key ? peerIdOf(key) : undefined;
  }
}
