/**
 * Every default of the peer daemon, in one table (like the tracker's in daemon/defaults.ts):
 * the flags of p2p-peerd (peerd/main.ts), the daemon's own fallbacks and README.md's interface table
 * all take them from here.
 */
export const PEER_DEFAULTS = {
  /** --max-uploads: chunks read or sent at once, to all peers together (each holds a 1 MiB buffer). */
  maxUploads: 8,
  /** --max-connections: connections from other peers, in total. */
  maxConnections: 1024,
  /** --max-connections-per-ip. */
  maxConnectionsPerIp: 128,
  /** --handshake-timeout-ms: a connecting peer must prove its key within this. */
  handshakeTimeoutMs: 2000,
  /** --read-timeout-ms: a request frame must arrive whole within this. */
  readTimeoutMs: 5000,
  /**
   * A connection with chunks queued for it that takes none of them for this long is closed: a reader
   * that stopped reading would otherwise keep its upload buffers until the idle timeout. Progress is
   * counted in whole chunks (1 MiB), so a downloader must get about 0.42 Mbit/s of this seeder's
   * uplink; with the 8 buffers all sending, an uplink of 3.4 Mbit/s gives each that much. (The
   * downloader's own patience for a chunk is 60 s.)
   */
  sendTimeoutMs: 20_000,
  /** A chunk connection with no traffic for this long is closed. */
  chunkIdleTimeoutMs: 120_000,
  /**
   * Dialling a tracker: a TCP and TLS handshake within this. A tracker busy with a crowd of peers (after a
   * takeover) takes their handshakes in turn; a tracker that stopped answering heartbeats is tried last.
   */
  trackerConnectTimeoutMs: 3000,
  /**
   * A tracker that took the TCP connection (its kernel did) gets this long for the TLS handshake. Node
   * takes one waiting connection per turn of its event loop, so after a takeover a busy main takes a crowd
   * of peers at a few dozen to a few hundred a second; a peer that gave up after 3 s left behind a dead
   * connection for it to take, and tried again, so that the main took mostly dead ones (issue 12).
   */
  trackerSecureTimeoutMs: 20_000,
  /** A request waits this long for a tracker session to exist (during a reconnection). */
  trackerWaitMs: 3000,
  /** A tracker request is tried again, on the next session where needed, for this long. */
  trackerRetryMs: 6000,
  /**
   * Told of a new main (TRACKER_CHANGED), a peer moves to it after a random delay below this, and after
   * losing its tracker it tries the next one after a random delay below a quarter of this: 20,000 peers
   * then arrive over a second instead of at once (issue 12), and reads keep working meanwhile.
   */
  trackerMoveSpreadMs: 1000,
  /**
   * A peer opens its standby session (peerd/tracker-client.ts) within a random delay below this once it has
   * a session in use: a fleet that starts, or has just moved to a new main, opens them over a few seconds
   * (1,000 peers at once after a takeover kept a backup that shares 2 cores from answering HELLOs in 2 s).
   * In a larger fleet, over four of the main's heartbeat leases if that is longer: the lease grows with the
   * fleet (peerd/tracker-client.ts, standbySpread).
   */
  trackerStandbySpreadMs: 5000,
  /**
   * A standby session with a worse-ranked tracker than the peer could have (the better one was down when it
   * was opened) tries the better one every 0.5-1.5 times this, and moves there once it answers. When a main
   * returns after a takeover, the fleet's standbys come to it over this long (about 170 handshakes a second
   * at 5,000 peers, rather than 5,000 at once), and the acting main hands command back once it has most of
   * them (the tracker's --takeback-wait-ms): the takeback is then a promotion, as the takeover is.
   */
  trackerStandbyUpgradeMs: 30_000,
} as const;
