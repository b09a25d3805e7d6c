/**
 * What the fleet benchmark's parent and its peer worker processes say to each other (Node's IPC channel,
 * JSON). The parent gives each worker a slice of the peers and tells it what to do; a worker reports what
 * its peers saw every REPORT_EVERY_MS, as flat number arrays (cheap to serialise at thousands a second).
 * Times are milliseconds since the epoch, with sub-millisecond precision (epochMs), the same clock in
 * every process.
 */
import type { WorkloadOptions } from './workload.js';

export const REPORT_EVERY_MS = 250;

export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

export interface WorkerSetup {
  worker: number;
  /** The cluster, in rank order (`HOST:PORT`). */
  trackers: string[];
  /** Peer numbers (and identities in the cache) first .. first + count - 1 start with the fleet. */
  first: number;
  count: number;
  /** Peer numbers kept for churn: each joins once, in order, after a peer leaves. */
  spareFirst: number;
  spareCount: number;
  workload: WorkloadOptions;
  /** The first this many peers of the slice log their tracker session (info and up) to the worker's log. */
  peerLogs: number;
  /** Each peer keeps the product's BlacklistCache (about 370 KB each), not just its re-sync. */
  productBlacklistCache: boolean;
}

/** What a peer's request came to. */
export const Outcome = { ok: 0, notFound: 1, failed: 2 } as const;
export const OpKind = { lookup: 0, search: 1 } as const;

export type ToWorker =
  /** Start every peer of the slice, `window` connecting at a time; files are withheld (announce() is empty). */
  | { t: 'connect'; window: number }
  /** Announce every peer's files (the product's registerAll), `window` at a time. */
  | { t: 'register'; window: number }
  /** Lookups and searches per second from this worker's peers, open loop (0 stops them). */
  | { t: 'load'; lookupsPerSec: number; searchesPerSec: number; searchLimit: number }
  /** Peers per second that leave (close: LEAVE) and as many new ones that join (0 stops). */
  | { t: 'churn'; peersPerSec: number }
  /** Send what has been seen so far now, then answer 'flushed'. */
  | { t: 'flush' }
  /** Count the peers by what their tracker session is now (answered with 'whereabouts'). */
  | { t: 'whereabouts' }
  | { t: 'exit' };

/** What a worker's peers saw since its last report. */
export interface WorkerReport {
  /** [peer, tracker rank (-1: not in the cluster list), at] per tracker session that came up. */
  sessions: number[];
  /** [peer, tracker rank, at] per REGISTER the tracker acknowledged (committed on its backups too). */
  acks: number[];
  /** [peer, at] per peer that left (churn). */
  left: number[];
  /** [peer, at] per peer that joined (churn). */
  joined: number[];
  /** [kind (OpKind), at (answer), latency ms, outcome (Outcome), hits (search) or holders (lookup)] per request. */
  samples: number[];
  /** Heartbeats (PING) answered, and not answered within the client's limit. */
  pongs: number;
  pingFailures: number;
  /** Sessions lost (the client's state went from connected to connecting). */
  sessionsLost: number;
  /** Failed requests by error code. */
  errors: Record<string, number>;
  /** Requests not sent because too many were waiting for an answer (the generator could not keep up). */
  skipped: number;
  inFlight: number;
  /** This worker's event-loop delay over the period (ms): a busy generator delays its own timers. */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  at: number;
}

export type FromWorker =
  | { t: 'ready'; loadMs: number }
  | { t: 'report'; report: WorkerReport }
  | { t: 'done'; phase: 'connect' | 'register'; failures: number }
  | { t: 'flushed' }
  /** Peers in the fleet by `TRACKER ROLE STATE` of their session (TrackerClient's current, role and state). */
  | { t: 'whereabouts'; counts: Record<string, number> }
  | { t: 'fatal'; message: string };
