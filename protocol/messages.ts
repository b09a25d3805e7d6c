/**
 * The message catalogue: every message on the wire, declared once with its code, name, kind and body
 * schema. Encoding, decoding, protocol/README.md and the round-trip tests are all driven from this table.
 *
 * Kinds: a `request` expects exactly one `response` (or ERROR) with the same request id; an `event` needs
 * no answer (request id 0, or the id of the request it reports progress on).
 */
import { defineCodec, type Codec, type Decoded, type Schema } from './codec.js';

export type MessageKind = 'request' | 'response' | 'event';

interface Entry<S extends Schema> {
  readonly code: number;
  readonly kind: MessageKind;
  readonly codec: Codec<S>;
}

function msg<S extends Schema>(code: number, kind: MessageKind, schema: S): Entry<S> {
  return { code, kind, codec: defineCodec(schema) };
}

const fileEntry = { id: 'id32', size: 'u64', name: 'str', complete: 'bool' } as const;
const target = { target: 'str' } as const;
const receipt = { publicKey: 'id32', index: 'u32', hash: 'id32', signature: 'sig64' } as const;
const blacklistEntry = { target: 'str', reason: 'str', since: 'u64', addedBy: 'str' } as const;
const reportEntry = { reporter: 'str', fileId: 'id32', reason: 'str', targets: 'str', evidence: 'u8', time: 'u64', status: 'str' } as const;

/**
 * What a report's evidence needs, and no more: one receipt proves a download from its signer, and a few
 * per accused peer are plenty (a bad-data report needs one). Every receipt costs the tracker a signature
 * check (about 0.15 ms), so these caps bound what one REPORT can make it do (issue 10).
 */
export const MAX_REPORT_RECEIPTS = 1024;
/** Receipts signed by one serving peer in one REPORT. */
export const MAX_RECEIPTS_PER_SERVER = 16;

export const Messages = {
  // --- common -------------------------------------------------------------------------------------
  /** The answer to a failed request (same request id), or a last word before closing (request id 0). */
  ERROR: msg(0x01, 'response', { code: 'str', message: 'str' }),
  OK: msg(0x02, 'response', {}),
  PING: msg(0x03, 'request', {}),
  PONG: msg(0x04, 'response', {}),
  /** Withdraws an earlier request of the sender; the receiver may still answer it, and the answer is dropped. */
  CANCEL: msg(0x05, 'event', { requestId: 'u32' }),

  // --- handshake (inside TLS 1.3, which has proven each side's key; every connection starts with HELLO) --
  /**
   * role: 1 peer, 2 tracker, 3 admin. listenPort: where a peer serves chunks. link: a tracker link's
   * claim (the dialler's rank and the rank it dials, two bytes), else empty.
   */
  HELLO: msg(0x10, 'request', { role: 'u8', listenPort: 'u16', software: 'str', link: 'bytes' }),
  /**
   * Session facts: the caller's peer id and address as the server sees them, the lease, and the tracker
   * role. proof: to an admin, the tracker's proof that it knows the admin token, made for this TLS session
   * only (see README.md, section 6); empty otherwise.
   */
  /**
   * A plain chunk link (both peers run with --plain-chunk-links; README.md, section 6): no TLS, so the
   * answer to HELLO is a fresh nonce, and the downloader proves its key with PLAIN_AUTH.
   */
  PLAIN_CHALLENGE: msg(0x11, 'response', { nonce: 'id32' }),
  /**
   * The downloader's Ed25519 key and its signature of plainAuthPayload(nonce, the seeder's key) (see
   * plain-link.ts); answered with WELCOME.
   */
  PLAIN_AUTH: msg(0x12, 'request', { publicKey: 'id32', signature: 'sig64' }),
  WELCOME: msg(0x13, 'response', {
    peerId: 'str',
    observedHost: 'str',
    observedPort: 'u16',
    leaseMs: 'u32',
    role: 'str',
    term: 'u64',
    primary: 'str',
    proof: 'bytes',
  }),

  // --- peer -> tracker ----------------------------------------------------------------------------
  REGISTER: msg(0x20, 'request', { files: { list: fileEntry } }),
  /** all=true drops every file of this peer; otherwise the listed ids. */
  UNREGISTER: msg(0x21, 'request', { all: 'bool', ids: { list: { id: 'id32' } } }),
  SEARCH: msg(0x22, 'request', { text: 'str', limit: 'u32' }),
  SEARCH_RESULT: msg(0x23, 'response', {
    files: { list: { id: 'id32', name: 'str', size: 'u64', peers: 'u32' } },
    truncated: 'bool',
  }),
  LOOKUP: msg(0x24, 'request', { id: 'id32' }),
  LOOKUP_RESULT: msg(0x25, 'response', {
    size: 'u64',
    peers: { list: { peerId: 'str', publicKey: 'id32', host: 'str', port: 'u16', complete: 'bool' } },
  }),
  BLACKLIST_CHECK: msg(0x26, 'request', { peerId: 'str', host: 'str' }),
  BLACKLIST_VERDICT: msg(0x27, 'response', { banned: 'bool', reason: 'str' }),
  /** Pushed by the tracker to every session when the blacklist changes. */
  BLACKLIST_CHANGED: msg(0x28, 'event', { added: { list: target }, removed: { list: target } }),
  /** manifest: the encoded manifest of fileId (lets the tracker check hashes); receipts: signed by the servers. */
  REPORT: msg(0x29, 'request', {
    fileId: 'id32',
    reason: 'str',
    evidence: 'u8',
    manifest: 'bytes',
    receipts: { list: receipt, max: MAX_REPORT_RECEIPTS, tooMany: 'P2P_TOO_MANY_RECEIPTS' },
  }),
  REPORT_RESULT: msg(0x2a, 'response', { blacklisted: { list: target }, pending: { list: target } }),
  LEAVE: msg(0x2b, 'request', {}),
  /** Pushed to sessions when a new main takes command, so peers move to it. */
  TRACKER_CHANGED: msg(0x2c, 'event', { primary: 'str', term: 'u64' }),
  /**
   * Pushed by a tracker to a peer whose HELLO said it reads it (PEER_FEATURES.lease): the session's lease
   * from now on, as in WELCOME (its fleet grew or shrank since); the peer pings every third of it.
   */
  LEASE: msg(0x2f, 'event', { leaseMs: 'u32' }),
  /**
   * Sent by a peer on every (re)connection, so a change pushed while it was away is not lost: `version`
   * is the digest of the list it holds (blacklistDigest; a 0.1 peer sends the version it was last told).
   */
  BLACKLIST_SYNC: msg(0x2d, 'request', { version: 'str' }),
  /** The tracker's blacklist version and, unless the peer holds that very list, every target on it. */
  BLACKLIST_STATE: msg(0x2e, 'response', { version: 'str', changed: 'bool', targets: { list: target } }),

  // --- peer -> peer ---------------------------------------------------------------------------------
  GET_MANIFEST: msg(0x40, 'request', { fileId: 'id32' }),
  MANIFEST: msg(0x41, 'response', { manifest: 'bytes' }),
  GET_CHUNK: msg(0x42, 'request', { fileId: 'id32', index: 'u32' }),
  /** signature: Ed25519 by the server over the receipt (see receiptPayload in protocol/identity.ts); data: the chunk bytes. */
  CHUNK: msg(0x43, 'response', { fileId: 'id32', index: 'u32', hash: 'id32', signature: 'sig64', data: 'rest' }),
  GET_HAVE: msg(0x44, 'request', { fileId: 'id32' }),
  /** One bit per chunk, most significant bit of byte 0 first: which verified chunks the server holds. */
  HAVE: msg(0x45, 'response', { complete: 'bool', bits: 'bytes' }),

  // --- admin -> tracker (each carries the admin token) ---------------------------------------------
  ADMIN_STATUS: msg(0x50, 'request', { token: 'str' }),
  ADMIN_STATUS_RESULT: msg(0x51, 'response', {
    /** hash: the answering tracker's digest of its replicated state (its own row only; '' for the others). */
    trackers: { list: { address: 'str', role: 'str', term: 'u64', reachable: 'bool', seq: 'u64', behind: 'u64', hash: 'str' } },
  }),
  /** The whole blacklist in one answer: past about 70,000 entries (short reasons) it no longer fits in a frame; ADMIN_BLACKLIST_PAGE has no such limit. */
  ADMIN_BLACKLIST_LIST: msg(0x52, 'request', { token: 'str' }),
  ADMIN_BLACKLIST: msg(0x53, 'response', { entries: { list: blacklistEntry } }),
  ADMIN_BLACKLIST_ADD: msg(0x54, 'request', { token: 'str', target: 'str', reason: 'str' }),
  ADMIN_BLACKLIST_REMOVE: msg(0x55, 'request', { token: 'str', target: 'str' }),
  ADMIN_REPORTS: msg(0x56, 'request', { token: 'str' }),
  ADMIN_REPORTS_RESULT: msg(0x57, 'response', { reports: { list: reportEntry } }),
  /**
   * One page of the blacklist, by target, after `after` ('' for the first page); at most `limit` entries
   * and about 4 MiB. `next` is what to ask after for the next page; '' when this page is the last.
   */
  ADMIN_BLACKLIST_PAGE: msg(0x58, 'request', { token: 'str', after: 'str', limit: 'u32' }),
  ADMIN_BLACKLIST_PAGE_RESULT: msg(0x59, 'response', { entries: { list: blacklistEntry }, next: 'str' }),
  /** One page of the reports, oldest first, the same way (`after` and `next` are the tracker's own cursor). */
  ADMIN_REPORTS_PAGE: msg(0x5a, 'request', { token: 'str', after: 'str', limit: 'u32' }),
  ADMIN_REPORTS_PAGE_RESULT: msg(0x5b, 'response', { reports: { list: reportEntry }, next: 'str' }),

  // --- tracker <-> tracker (replication) -----------------------------------------------------------
  /**
   * Every message between trackers, one way, on the sender's own link to the receiver: `message` is a
   * JSON document of daemon/raft/messages.ts (append, vote, snapshot part, merge, status, ...), each kept
   * under about 512 KiB.
   */
  RAFT: msg(0x60, 'event', { message: 'text' }),

  // --- CLI -> peer daemon, over the control socket --------------------------------------------------
  CONTROL: msg(0x70, 'request', { command: 'str', args: 'text' }),
  CONTROL_RESULT: msg(0x71, 'response', { result: 'text' }),
  /** Progress of a running CONTROL request (same request id). */
  CONTROL_EVENT: msg(0x72, 'event', { event: 'text' }),
} as const;

export type MessageName = keyof typeof Messages;
export type Body<N extends MessageName> = Decoded<(typeof Messages)[N]['codec']['schema']>;

/** Derived reverse map from wire code to name. */
export const messageByCode: ReadonlyArray<MessageName | undefined> = (() => {
  const table: Array<MessageName | undefined> = new Array(256).fill(undefined);
  for (const name of Object.keys(Messages) as MessageName[]) {
    const { code } = Messages[name];
    if (table[code] !== undefined) throw new Error(`message code ${code} used twice`);
    table[code] = name;
  }
  return table;
})();

export const Role = { peer: 1, tracker: 2, admin: 3 } as const;
export type RoleName = keyof typeof Role;

/**
 * A peer's HELLO `link` (which a tracker link fills with its claim) carries the peer's features: one byte,
 * one bit each. Empty from a 0.1 peer, which reads none of them; a 0.1 tracker ignores the byte.
 */
export const PEER_FEATURES = {
  /** It reads LEASE: the tracker may stretch (or shorten) its heartbeats during its session. */
  lease: 0x01,
  /**
   * The session may be a standby (peerd/tracker-client.ts; a peer that keeps standbys sets it on every
   * session, since the one it leaves at a move becomes its standby), sent with `lease`: a backup tells it, as
   * its lease, the silence it tolerates (--lease-ms) rather than the heartbeat lease, so it is pinged rarely,
   * at its next PING if it told it another lease as main; once the tracker is main it is told the heartbeat
   * lease (LEASE) at its next PING, like any session.
   */
  standby: 0x02,
} as const;

/** The features a peer's HELLO announces (see PEER_FEATURES). */
export function peerFeatures(link: Buffer): number {
  return link.length >= 1 ? link[0]! : 0;
}

/** REPORT's `evidence`: what the report claims (a user's word, or bad data proven by a receipt). */
export const Evidence = { user: 0, badData: 1 } as const;
export type EvidenceName = keyof typeof Evidence;

export { isStrategyName, STRATEGY_NAMES, type StrategyName } from './strategy-names.js';
