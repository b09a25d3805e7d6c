/**
 * Every default of the tracker, in one table (like peerd/defaults.ts): the flags of p2p-tracker
 * (daemon/main.ts) and the tracker's own fallbacks take them from here.
 * A module of its own so that p2p-tracker reads its flags (--help, --version, --print-config, a usage
 * error) without loading the tracker.
 */
export const DEFAULTS = {
  heartbeatMs: 200,
  failoverMs: 1000,
  leaseMs: 10_000,
  /**
   * A PING costs the main about 140 us of CPU, all told (docs/scaling.md): 3,000 a second are about
   * 0.4 of a core, leaving the rest for lookups, searches and registrations.
   */
  peerHeartbeatsPerSecond: 3000,
  handshakeTimeoutMs: 2000,
  /** TLS handshakes at once (about 1 ms of CPU each); the rest wait unread, so no turn of the loop runs long. */
  maxTlsHandshakes: 32,
  /**
   * How long a client may wait for one of those turns: a peer daemon gives a tracker 20 s for the TLS
   * handshake once TCP is up (peerd's trackerSecureTimeoutMs), so its turn comes while it still waits.
   */
  tlsQueueWaitMs: 18_000,
  readTimeoutMs: 5000,
  maxConnections: 10_000,
  maxConnectionsPerIp: 256,
  maxFilesPerRegister: 10_000,
  /** A peer sharing a big folder stays far below; 100,000 files of 100-byte names are about 60 MB of tracker memory. */
  maxFilesPerPeer: 100_000,
  maxNameBytesPerPeer: 8 * 1024 * 1024,
  maxInFlight: 32,
  reportsPerMinute: 10,
  /** Two full reports a minute (MAX_REPORT_RECEIPTS each); a bad-data report needs one. */
  receiptChecksPerMinute: 2048,
  /** Receipt checks (about 0.15 ms each) run per event-loop turn: a lookup waits at most about 1 ms for them. */
  receiptChecksPerTurn: 8,
  /**
   * Peers' requests run in stretches of this much of the event loop, with a whole turn of the loop between
   * them (daemon/request-gate.ts): its timers (the cluster's heartbeats), and one new connection taken, as
   * Node takes one waiting connection per turn. Short stretches keep a busy main taking a crowd of
   * reconnecting peers at hundreds a second rather than dozens.
   */
  requestStretchMs: 5,
  /**
   * A lookup or search that waited this long for its turn is refused (P2P_OVERLOADED) rather than
   * answered after its peer gave up (peers wait 5 s): see daemon/request-gate.ts.
   */
  requestMaxWaitMs: 2000,
  /** Once the oldest waiting lookup (or search) has waited this long, the newest of its line are answered first. */
  requestLifoAfterMs: 100,
  /**
   * Peer sessions an event for all (TRACKER_CHANGED, BLACKLIST_CHANGED) is written to per turn of the loop:
   * 17,000 in one go took 2.5-3.2 s on a starved main (150-190 us a write), so a slice of 128 about 20 ms
   * there, a few ms on a main with a core of its own.
   */
  broadcastPerTurn: 128,
  /**
   * --takeback-stragglers: a returning higher-ranked tracker takes command back once it has sessions (peers' standbys) from all but
   * this many of the main's peers, or all but a twentieth (daemon/raft/node.ts): those few move to it by a
   * handshake at the takeback, within a second or two here. A fleet of 5,000 that all dialled the returning
   * main at once was never all in (docs/scaling.md). So a fleet of a few hundred is taken back at once.
   */
  takebackStragglers: 256,
  /**
   * --takeback-wait-ms: the longest a main waits for that. Peers move their standby session to a
   * better-ranked tracker every 15-45 s (peerd's trackerStandbyUpgradeMs), so most have by then; peers that
   * keep none (release 0.1) never come, and this bounds the wait. 0: command goes back at once.
   */
  takebackWaitMs: 60_000,
  /** Receipt checks waiting at once, for every reporter together (about 2 s of work); more are refused. */
  maxQueuedReceiptChecks: 16_384,
} as const;
