/**
 * The tracker's Prometheus metrics (`--metrics HOST:PORT`), all named `p2p_tracker_*`. Gauges read the
 * tracker's state when scraped (sessions, files, holders, role, term, backups, blacklist); counters and
 * histograms are bumped at the one place each event happens (a lookup answered, a write committed, a
 * report decided, a connection refused). Labels are closed catalogues (role, op, outcome, error code) or
 * the members of --cluster, never a peer id.
 *
 * Loaded by tracker.ts only when --metrics is given (see protocol/metrics-http.ts).
 */
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Address } from '../protocol/index.js';
import { daemonRegistry, MetricsServer } from '../protocol/metrics-http.js';
import type { Cluster, TrackerRole } from './cluster.js';
import type { Op } from './ops.js';
import type { RequestClass } from './request-gate.js';
import type { TrackerState } from './state.js';

const PREFIX = 'p2p_tracker_';

const ROLES: readonly TrackerRole[] = ['primary', 'backup', 'syncing', 'candidate'];
/** A session's role: 'handshake' until its HELLO says which. */
export const SESSION_ROLES = ['handshake', 'peer', 'tracker', 'admin'] as const;
export type SessionRole = (typeof SESSION_ROLES)[number];
/** What a report came to: the report's status once committed, or refused (rate limit, bad evidence...). */
export type ReportOutcome = 'blacklisted' | 'partly blacklisted' | 'pending' | 'refused';
const REPORT_OUTCOMES: readonly ReportOutcome[] = ['blacklisted', 'partly blacklisted', 'pending', 'refused'];

/** Tracker reads take microseconds to a few milliseconds (a search over many files). */
const READ_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
/** A peer request's wait for its turn in the request gate: 0 when idle, up to the 2 s it may wait, more for announcements. */
const WAIT_BUCKETS = [0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5];
/** A TLS handshake's turn: a round trip and about 1 ms of CPU on each side; seconds behind a slow or busy client. */
const TLS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5];
/** Propose to commit: about 0 alone, a round trip and an fsync or two in a cluster; up to 5 x failover-ms. */
const WRITE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** What the gauges read at each scrape. */
export interface TrackerMetricsSource {
  state: TrackerState;
  cluster: Cluster;
  sessions(): Record<SessionRole, number>;
  /** The TLS handshake queue of peers and admins (protocol/server.ts ConnectionLimiter.tlsQueue). */
  tlsQueue?(): { waiting: number; running: number };
}

export class TrackerMetrics {
  private readonly lookups: Record<'found' | 'not_found', { inc(): void }>;
  private readonly lookupSeconds: Histogram;
  private readonly requestWaitSeconds: Histogram;
  private readonly requestWaits: Record<RequestClass, { observe(seconds: number): void }>;
  private readonly searches: Counter;
  private readonly reannouncements: Counter;
  private readonly overloadRefusals: Counter;
  private readonly heartbeats: Counter;
  private readonly searchSeconds: Histogram;
  private readonly writes: Counter<'op'>;
  private readonly writesFailed: Counter<'op' | 'code'>;
  private readonly writeSeconds: Histogram;
  private readonly elections: Counter;
  private readonly reports: Counter<'outcome'>;
  private readonly refusals: Counter<'code'>;
  private readonly tlsSeconds: Histogram;

  private constructor(
    readonly registry: Registry,
    source: TrackerMetricsSource,
  ) {
    const registers = [registry];
    const { state, cluster } = source;

    new Gauge({
      name: `${PREFIX}sessions`,
      help: 'Open connections, by role: peer, tracker (links from other trackers), admin, or handshake (no HELLO yet).',
      labelNames: ['role'],
      registers,
      collect() {
        const counts = source.sessions();
        for (const role of SESSION_ROLES) this.set({ role }, counts[role]);
      },
    });
    new Gauge({
      name: `${PREFIX}tls_handshakes`,
      help: 'The TLS handshake queue: clients waiting for a turn (unread), and turns under way (at most 32). Links from the other trackers skip it.',
      labelNames: ['state'],
      registers,
      collect() {
        const q = source.tlsQueue?.() ?? { waiting: 0, running: 0 };
        this.set({ state: 'waiting' }, q.waiting);
        this.set({ state: 'running' }, q.running);
      },
    });
    const sizes = (name: string, help: string, field: keyof ReturnType<TrackerState['sizes']>): void => {
      new Gauge({
        name: PREFIX + name,
        help,
        registers,
        collect() {
          this.set(state.sizes()[field]);
        },
      });
    };
    sizes('files_registered', 'Distinct files (ids) some peer holds.', 'files');
    sizes('holder_entries', 'Holder entries: (peer, file) pairs, complete or partial.', 'holders');
    sizes('peers_registered', 'Peers that hold at least one registered file.', 'peers');
    sizes('blacklist_entries', 'Entries on the blacklist (peer ids and addresses).', 'blacklist');

    new Gauge({
      name: `${PREFIX}role`,
      help: "1 for this tracker's current role, 0 for the others.",
      labelNames: ['role'],
      registers,
      collect() {
        for (const role of ROLES) this.set({ role }, cluster.role === role ? 1 : 0);
      },
    });
    new Gauge({
      name: `${PREFIX}term`,
      help: 'The current term (each takeover starts a new one).',
      registers,
      collect() {
        this.set(cluster.term);
      },
    });
    new Gauge({
      name: `${PREFIX}applied_index`,
      help: 'Index of the last log entry applied here.',
      registers,
      collect() {
        this.set(state.appliedIndex);
      },
    });
    new Gauge({
      name: `${PREFIX}backups`,
      help: 'On the main: the other trackers of --cluster heard within --failover-ms. 0 on a tracker that is not the main.',
      registers,
      collect() {
        this.set(cluster.backups().filter((b) => b.reachable).length);
      },
    });
    new Gauge({
      name: `${PREFIX}backup_lag_entries`,
      help: "On the main: per other tracker, the entries of the main's log it has not applied yet (as of its last status). Absent on a tracker that is not the main.",
      labelNames: ['rank', 'address'],
      registers,
      collect() {
        this.reset();
        for (const b of cluster.backups()) this.set({ rank: String(b.rank), address: b.address }, b.lagEntries);
      },
    });

    const lookups = new Counter({ name: `${PREFIX}lookups_total`, help: 'LOOKUP requests answered, by result: found or not_found.', labelNames: ['result'], registers });
    this.lookups = { found: lookups.labels('found'), not_found: lookups.labels('not_found') };
    this.lookupSeconds = new Histogram({ name: `${PREFIX}lookup_duration_seconds`, help: 'Time to answer a LOOKUP.', buckets: READ_BUCKETS, registers });
    this.requestWaitSeconds = new Histogram({
      name: `${PREFIX}request_wait_seconds`,
      help: "Time a peer's request waited for its turn (daemon/request-gate.ts), by line: urgent (REGISTER, UNREGISTER, LEAVE, BLACKLIST_SYNC, BLACKLIST_CHECK, REPORT), ordinary (LOOKUP), heavy (SEARCH).",
      labelNames: ['class'],
      buckets: WAIT_BUCKETS,
      registers,
    });
    this.requestWaits = { urgent: this.requestWaitSeconds.labels('urgent'), ordinary: this.requestWaitSeconds.labels('ordinary'), heavy: this.requestWaitSeconds.labels('heavy') };
    this.searches = new Counter({ name: `${PREFIX}searches_total`, help: 'SEARCH requests answered.', registers });
    this.reannouncements = new Counter({ name: `${PREFIX}reannouncements_total`, help: 'REGISTERs answered without a write: the main already held exactly what the peer announced.', registers });
    this.overloadRefusals = new Counter({ name: `${PREFIX}overload_refusals_total`, help: 'LOOKUPs and SEARCHes refused unrun (P2P_OVERLOADED) after waiting 2 s for their turn.', registers });
    this.heartbeats = new Counter({ name: `${PREFIX}heartbeats_total`, help: 'PINGs answered (peers send one every 300 ms or a third of the lease, whichever is less).', registers });
    this.searchSeconds = new Histogram({ name: `${PREFIX}search_duration_seconds`, help: 'Time to answer a SEARCH.', buckets: READ_BUCKETS, registers });
    this.writes = new Counter({ name: `${PREFIX}writes_total`, help: 'Writes made on this tracker (as main) and committed, by op.', labelNames: ['op'], registers });
    this.writesFailed = new Counter({ name: `${PREFIX}writes_failed_total`, help: 'Writes proposed here that were not committed (lost command, replaced, timed out, shutting down), by op and error code.', labelNames: ['op', 'code'], registers });
    this.writeSeconds = new Histogram({ name: `${PREFIX}write_commit_seconds`, help: 'Replication latency: from proposing a write to its commit and apply here.', buckets: WRITE_BUCKETS, registers });
    this.elections = new Counter({ name: `${PREFIX}elections_started_total`, help: 'Times this tracker ran for main (or took command alone).', registers });
    this.reports = new Counter({ name: `${PREFIX}reports_total`, help: 'Reports received, by outcome: blacklisted, partly_blacklisted, pending (policy), refused.', labelNames: ['outcome'], registers });
    for (const outcome of REPORT_OUTCOMES) this.reports.inc({ outcome: outcomeLabel(outcome) }, 0);
    this.tlsSeconds = new Histogram({
      name: `${PREFIX}tls_handshake_seconds`,
      help: "A queued TLS handshake, from its turn to secure: mostly the client's round trip and its own CPU, as a turn is held while the client answers.",
      buckets: TLS_BUCKETS,
      registers,
    });
    this.refusals = new Counter({ name: `${PREFIX}connections_refused_total`, help: 'Connections refused before or during the handshake, by error code (limits, TLS required, handshake timeout, blacklisted, tracker link refused).', labelNames: ['code'], registers });
  }

  private server: MetricsServer | undefined;

  /** Defines the tracker's metrics on a registry of their own (default process metrics included) and serves them. */
  static async serve(address: Address, source: TrackerMetricsSource, logger: Logger): Promise<TrackerMetrics> {
    const metrics = new TrackerMetrics(daemonRegistry(), source);
    metrics.server = await MetricsServer.listen(metrics.registry, address, logger);
    return metrics;
  }

  /** Where the metrics are served (the port bound, when 0 was asked for). */
  get address(): Address | undefined {
    return this.server?.address;
  }

  async close(): Promise<void> {
    await this.server?.close();
  }

  lookup(seconds: number, found: boolean): void {
    this.lookups[found ? 'found' : 'not_found'].inc();
    this.lookupSeconds.observe(seconds);
  }

  requestWaited(cls: RequestClass, seconds: number): void {
    this.requestWaits[cls].observe(seconds);
  }

  search(seconds: number): void {
    this.searches.inc();
    this.searchSeconds.observe(seconds);
  }

  reannounced(): void {
    this.reannouncements.inc();
  }

  overloadRefused(): void {
    this.overloadRefusals.inc();
  }

  heartbeat(): void {
    this.heartbeats.inc();
  }

  writeDone(op: Op['op'], seconds: number, failure?: string): void {
    if (failure) {
      this.writesFailed.inc({ op, code: failure });
      return;
    }
    this.writes.inc({ op });
    this.writeSeconds.observe(seconds);
  }

  roleChanged(from: TrackerRole, to: TrackerRole): void {
    // Running for main, or taking command without a vote (alone, or the other of two is silent).
    if (to === 'candidate' || (to === 'primary' && from !== 'candidate')) this.elections.inc();
  }

  report(outcome: ReportOutcome): void {
    this.reports.inc({ outcome: outcomeLabel(outcome) });
  }

  refused(code: string): void {
    this.refusals.inc({ code });
  }

  tlsHandshake(seconds: number): void {
    this.tlsSeconds.observe(seconds);
  }
}

function outcomeLabel(outcome: ReportOutcome): string {
  return outcome.replace(' ', '_');
}
