/**
 * The chain of command between trackers: who is main, replicating every write to the backups before it
 * is acknowledged, heartbeats, takeovers and handing command back. With one tracker it is always main.
 *
 * How it works
 * - `--cluster A,B,C` lists every tracker in rank order; a tracker's rank is the place of its own
 *   `--listen` in that list. Every tracker sends every other one a HEARTBEAT each heartbeat period, over
 *   its own connection to it (tracker-link.ts), saying its term, seq, whether it is main and has state.
 * - The main applies a write, sends it to every backup in sync (REPLICATE, in seq order) and answers the
 *   client only when each has it on disk. A backup that fails, or does not answer within failover-ms,
 *   is dropped from replication (its stream is closed) and copies the full state again when it can
 *   (SYNC_REQUEST -> SYNC_STATE), so a dead backup delays writes once, by at most failover-ms.
 * - A backup that hears nothing from every tracker ranked above it for failover-ms takes over: it
 *   records a new, higher term durably, then acts. A tracker defers to a higher-ranked one only if that
 *   one has at least as much state; one with more state than every other acts whatever its rank.
 * - Chain of command: a tracker that starts, or comes back, first finds the acting main, copies its
 *   state and follows it; if it outranks that main it then takes command in a new term (TAKE_COMMAND):
 *   the old main stops taking writes, lets those in flight finish, and steps down to backup.
 * - Terms fence old mains: a tracker refuses any write stamped with an older term than its own
 *   (P2P_STALE_TERM) and steps down as soon as it sees a newer term. A new main's first write moves seq
 *   on by two, so its writes always outnumber anything an old main applied but never got acknowledged,
 *   and "has more state" is a plain comparison of seq.
 *
 * Guarantees, and their limits (read this before deciding how many trackers to run)
 * - Three or more trackers: a write is acknowledged only when a majority of trackers hold it, and a
 *   takeover needs the votes of a majority, none of which has more state than the candidate. So every
 *   acknowledged write survives any crash, pause or partition that leaves a majority up and connected;
 *   a main cut off with a minority cannot acknowledge anything and steps down within failover-ms; there
 *   are never two mains in one term. With no majority reachable there is no main: reads still work on
 *   every tracker, writes fail until a majority is back.
 * - Two trackers: a majority of two is both, which would stop all writing whenever either one died. So
 *   with two, the main keeps writing alone when the backup is gone, and the backup takes over alone when
 *   the main falls silent. If they are partitioned rather than dead, both act as main (in different
 *   terms) for as long as the partition lasts. Writes a main acknowledges alone are kept in a durable
 *   merge journal; on healing the side with the older term steps down, copies the other's state and
 *   hands over its journal: the blacklist and reports merge as sets (an entry or report is added if
 *   absent; a removal wins only over an entry older than it), and holders are soft state that peers
 *   announce again. Nothing acknowledged is lost, but while the partition lasts the two sides disagree
 *   (a target banned on one side is not yet banned on the other). Like Redis Sentinel with two
 *   instances, this trades consistency for availability in a way two nodes cannot avoid: run three
 *   trackers where that matters.
 * - A paused main (SIGSTOP, a long GC pause, a frozen VM) sees the gap in its own monotonic clock when
 *   it resumes and steps down before acknowledging anything; a write it already had in flight is
 *   refused by the backups, which moved to a newer term. None of its old-term writes sticks.
 * - A tracker with fresh --data never becomes main while any tracker with state is reachable. Started
 *   alone it does act, with empty state; when a tracker with state comes back, the one with more state
 *   takes command and the other's journal is merged into it as above.
 * - Backups answer reads (search, lookup, blacklist checks) from their copy, which lags the main by at
 *   most the writes in flight. After a takeover, holders whose peers do not reconnect to the new main
 *   within the lease are dropped; peers that do reconnect announce their files again.
 */
import os from 'node:os';
import type { Logger } from 'pino';
import {
  formatAddress,
  P2PError,
  toP2PError,
  type Address,
  type Body,
  type Clock,
  type Connection,
  type IncomingRequest,
  type Timer,
} from '../protocol/index.js';
import { decodeOp, decodeOps, encodeOp, mergeable, parseSnapshot, Replicator } from './replication.js';
import { isDurableOp, type Op, type TrackerState } from './state.js';
import { TrackerLink } from './tracker-link.js';

export type TrackerRole = 'primary' | 'backup' | 'syncing' | 'candidate';

export interface ClusterOptions {
  self: Address;
  members: Address[];
  state: TrackerState;
  heartbeatMs: number;
  failoverMs: number;
  /** After a takeover, holdings of peers that have not reconnected within this long are dropped. */
  leaseMs?: number;
  logger: Logger;
  clock: Clock;
  onApplied: (op: Op) => void;
  onRoleChange: (from: TrackerRole, to: TrackerRole) => void;
  /** Shared by every tracker of the cluster; links prove it both ways. */
  clusterSecret?: string | undefined;
  /** Whether a peer has a session with this tracker (for the sweep after a takeover). */
  isPeerConnected?: (peerId: string) => boolean;
}

/** What this tracker knows of another member, from its last heartbeat or answer. */
interface Member {
  readonly rank: number;
  readonly address: string;
  readonly link: TrackerLink;
  heardAt: number | undefined;
  term: number;
  seq: number;
  primary: boolean;
  stateful: boolean;
  heartbeatInFlight: boolean;
}

type View = Body<'HEARTBEAT'>;

/** Finds this tracker's rank: the place of its listen address in the cluster list. */
export function rankOf(self: Address, members: Address[]): number {
  const labels = members.map((m) => formatAddress(m.host, m.port));
  const dup = labels.find((l, i) => labels.indexOf(l) !== i);
  if (dup) throw new P2PError('P2P_BAD_REQUEST', `--cluster lists ${dup} twice`);
  if (members.length > 255) throw new P2PError('P2P_BAD_REQUEST', '--cluster lists more than 255 trackers');
  const selfLabel = formatAddress(self.host, self.port);
  const exact = labels.indexOf(selfLabel);
  if (exact >= 0) return exact;
  // Listening on every interface: match the entry with our port whose host is one of ours.
  if (self.host === '0.0.0.0' || self.host === '::') {
    const local = new Set(['localhost', ...Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address))]);
    const hits = members.map((m, i) => ({ m, i })).filter(({ m }) => m.port === self.port && local.has(m.host));
    if (hits.length === 1) return hits[0]!.i;
  }
  throw new P2PError('P2P_BAD_REQUEST', `--listen ${selfLabel} is not in --cluster ${labels.join(',')}; list every tracker, this one included, in rank order`);
}

export class Cluster {
  role: TrackerRole;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly state: TrackerState;
  private readonly selfRank: number;
  private readonly labels: string[];
  private readonly members: Member[] = [];
  private readonly majority: number;
  private readonly replicator: Replicator;
  private selfAddress = '';
  /** The main this tracker follows (and copies its state from), and that main's term. */
  private following: { rank: number; term: number } | undefined;
  private followingSince = 0;
  /** Our state is a copy of the followed main's, and its writes arrive in order. */
  private synced = false;
  /** The main (and term) whose state we last copied: a broken stream does not make us less of a backup. */
  private copied: { rank: number; term: number } | undefined;
  private lastSyncAttemptAt = -Infinity;
  private lastSyncError = '';
  private restoring: Promise<void> | undefined;
  private syncing: Promise<void> | undefined;
  private merging: Promise<void> | undefined;
  /** One takeover (election or chain of command) at a time. */
  private takeover: Promise<void> | undefined;
  private readonly connRanks = new WeakMap<Connection, number>();
  /** The rank each link authenticated as in its handshake (daemon/tracker.ts): the only rank it may claim. */
  private readonly authenticatedRanks = new WeakMap<Connection, number>();
  /** Local apply + send, in seq order. */
  private applyChain: Promise<unknown> = Promise.resolve();
  /** Acknowledgements, in seq order. */
  private ackChain: Promise<unknown> = Promise.resolve();
  /** Writes waiting for a majority to be in sync (three or more trackers, just after a takeover). */
  private quorumWait: Promise<void> | undefined;
  private startedAt = 0;
  private lastTickAt = 0;
  private tickTimer: Timer | undefined;
  private sweepTimer: Timer | undefined;
  private stopped = false;

  constructor(private readonly opts: ClusterOptions) {
    this.log = opts.logger;
    this.clock = opts.clock;
    this.state = opts.state;
    this.selfRank = rankOf(opts.self, opts.members);
    if (opts.members.length > 1 && opts.failoverMs < 2 * opts.heartbeatMs) {
      throw new P2PError('P2P_BAD_REQUEST', `--failover-ms (${opts.failoverMs}) must be at least twice --heartbeat-ms (${opts.heartbeatMs})`);
    }
    this.labels = opts.members.map((m) => formatAddress(m.host, m.port));
    this.majority = Math.floor(opts.members.length / 2) + 1;
    this.role = opts.members.length > 1 ? 'syncing' : 'backup';
    this.replicator = new Replicator({ timeoutMs: opts.failoverMs, label: (rank) => this.labels[rank]!, logger: this.log });
  }

  private get size(): number {
    return this.opts.members.length;
  }

  get isPrimary(): boolean {
    return this.role === 'primary';
  }

  get primaryAddress(): string | undefined {
    if (this.isPrimary) return this.selfAddress;
    return this.following ? this.labels[this.following.rank] : undefined;
  }

  start(bound: Address): void {
    const { state } = this;
    if (this.size === 1) {
      this.selfAddress = formatAddress(bound.host, bound.port);
      if (state.term === 0) state.setTerm(1);
      state.markStateful();
      this.setRole('primary');
      return;
    }
    this.selfAddress = this.labels[this.selfRank]!;
    this.startedAt = this.lastTickAt = this.clock.now();
    this.opts.members.forEach((address, rank) => {
      if (rank === this.selfRank) return;
      const member: Member = {
        rank,
        address: this.labels[rank]!,
        heardAt: undefined,
        term: 0,
        seq: 0,
        primary: false,
        stateful: false,
        heartbeatInFlight: false,
        link: new TrackerLink({
          rank,
          address,
          label: this.labels[rank]!,
          selfPort: bound.port,
          clusterSecret: this.opts.clusterSecret,
          connectTimeoutMs: Math.max(200, Math.min(this.opts.failoverMs, 2000)),
          greeting: () => this.view(),
          onGreeted: (ack) => this.observe(member, ack),
          onDown: (conn, reason) => this.replicator.drop(rank, `link closed: ${reason}`, conn),
          logger: this.log,
          clock: this.clock,
        }),
      };
      this.members[rank] = member;
    });
    this.log.info({ rank: this.selfRank, cluster: this.labels, term: state.term, seq: state.seq, stateful: state.stateful }, 'joining the tracker cluster; looking for the acting main');
    this.tickTimer = this.clock.setInterval(() => this.tick(), this.opts.heartbeatMs);
    this.tick();
  }

  stop(): void {
    this.stopped = true;
    this.tickTimer?.cancel();
    this.sweepTimer?.cancel();
    for (const m of this.others()) m.link.close();
  }

  requirePrimary(): void {
    // A write can reach a main that was frozen before its timers notice: check the clock here too.
    if (this.isPrimary && !this.noticeFreeze()) return;
    const main = this.primaryAddress;
    throw new P2PError('P2P_NOT_PRIMARY', `this tracker is not the main (it is ${this.role}); ${main ? `the main is ${main}` : 'a takeover is under way; try again in a second'}`);
  }

  /**
   * Applies a write and replicates it; resolves once it is durable here and on every backup in sync
   * (with three or more trackers, on a majority at least). Writes are applied and acknowledged in order.
   */
  commit(op: Op): Promise<void> {
    return this.write(op, true);
  }

  /** `journal`: keep the write for a merge if it is acknowledged here alone (see the top of this file). */
  private write(op: Op, journal: boolean): Promise<void> {
    // Waiters resume in the order they came (one shared promise), so writes keep their order.
    const waiting = this.awaitQuorum();
    if (waiting) return waiting.then(() => this.write(op, journal));
    const staged = this.applyChain.then(() => {
      this.requirePrimary();
      const term = this.state.term;
      const seq = this.state.seq + 1;
      this.state.apply(op, seq);
      this.opts.onApplied(op);
      return { term, seq, acks: this.replicator.send(term, seq, encodeOp(op)) };
    });
    this.applyChain = staged.catch(() => undefined);
    const replicated = staged.then(async (s) => ({ ...s, result: await s.acks }));
    const inOrder = Promise.all([replicated, this.ackChain]).then(([r]) => r);
    this.ackChain = inOrder.catch(() => undefined);
    return inOrder.then(({ term, seq, result }) => {
      if (result.staleTerm) this.stepDown('a backup knows a newer term');
      if (!this.isPrimary || this.state.term !== term) {
        throw new P2PError('P2P_NOT_PRIMARY', `this tracker lost command while write ${seq} was being replicated; the main is ${this.primaryAddress ?? 'being chosen'}`);
      }
      this.requirePrimary();
      const copies = result.acked.length + 1;
      if (copies < this.majority) {
        if (this.size >= 3) {
          this.stepDown(`only ${copies} of ${this.size} trackers hold write ${seq}; a majority is needed`);
          throw new P2PError('P2P_REPLICATION_FAILED', `write ${seq} reached only ${copies} of ${this.size} trackers; it may or may not be kept`);
        }
        // Two trackers, the other out of reach: acknowledge alone, and keep the write for a merge.
        if (journal && isDurableOp(op)) this.state.store.addJournal(term, seq, encodeOp(op));
      }
    });
  }

  /**
   * With three or more trackers a write needs a majority in sync. Just after a takeover the backups are
   * still copying the new main's state: wait for them (up to failover-ms) rather than fail the write.
   */
  private awaitQuorum(): Promise<void> | undefined {
    if (this.size < 3 || !this.isPrimary || this.replicator.size + 1 >= this.majority) return undefined;
    this.quorumWait ??= (async () => {
      const deadline = this.clock.now() + this.opts.failoverMs;
      while (this.isPrimary && this.replicator.size + 1 < this.majority) {
        const left = deadline - this.clock.now();
        if (left <= 0) {
          throw new P2PError('P2P_REPLICATION_FAILED', `only ${this.replicator.size + 1} of ${this.size} trackers are in sync; a write needs a majority. Try again in a moment`);
        }
        await new Promise<void>((resolve) => this.clock.setTimeout(resolve, Math.min(left, 10)));
      }
    })().finally(() => {
      this.quorumWait = undefined;
    });
    return this.quorumWait;
  }

  async onTrackerRequest(req: IncomingRequest, conn: Connection, authenticatedRank?: number): Promise<void> {
    if (authenticatedRank !== undefined) this.authenticatedRanks.set(conn, authenticatedRank);
    if (this.size === 1) throw new P2PError('P2P_UNEXPECTED_MESSAGE', `${req.name}: this tracker runs alone (no --cluster)`);
    if (this.stopped) throw new P2PError('P2P_SHUTTING_DOWN', 'this tracker is shutting down');
    switch (req.name) {
      case 'HEARTBEAT': {
        const body = (req as IncomingRequest<'HEARTBEAT'>).body;
        this.observe(this.memberOn(conn, body.rank), body);
        conn.reply(req.requestId, 'HEARTBEAT_ACK', this.view());
        return;
      }
      case 'REPLICATE':
        return this.onReplicate(req as IncomingRequest<'REPLICATE'>, conn);
      case 'SYNC_REQUEST':
        return this.onSyncRequest(req as IncomingRequest<'SYNC_REQUEST'>, conn);
      case 'VOTE_REQUEST':
        return this.onVoteRequest(req as IncomingRequest<'VOTE_REQUEST'>, conn);
      case 'TAKE_COMMAND':
        return this.onTakeCommand(req as IncomingRequest<'TAKE_COMMAND'>, conn);
      case 'MERGE':
        return this.onMerge(req as IncomingRequest<'MERGE'>, conn);
      default:
        throw new P2PError('P2P_UNEXPECTED_MESSAGE', `${req.name} is not a tracker-to-tracker request`);
    }
  }

  async status(): Promise<Body<'ADMIN_STATUS_RESULT'>['trackers']> {
    const { state } = this;
    if (this.size === 1) {
      return [{ address: this.selfAddress, role: this.role, term: state.term, reachable: true, seq: state.seq, behind: 0, hash: state.stateHash() }];
    }
    const main = this.following ? this.members[this.following.rank] : undefined;
    const mainSeq = this.isPrimary ? state.seq : main && this.reachable(main) ? main.seq : Math.max(state.seq, ...this.others().map((m) => m.seq));
    return this.opts.members.map((_, rank) => {
      if (rank === this.selfRank) {
        return { address: this.selfAddress, role: this.role, term: state.term, reachable: true, seq: state.seq, behind: Math.max(0, mainSeq - state.seq), hash: state.stateHash() };
      }
      const m = this.members[rank]!;
      const up = this.reachable(m);
      const role = !up ? 'unknown' : m.primary ? 'primary' : this.isPrimary && !this.replicator.has(rank) ? 'syncing' : 'backup';
      return { address: m.address, role, term: m.term, reachable: up, seq: m.seq, behind: up ? Math.max(0, mainSeq - m.seq) : 0, hash: '' };
    });
  }

  // --- the state machine ------------------------------------------------------------------------------

  private setRole(to: TrackerRole): void {
    const from = this.role;
    if (from === to) return;
    this.role = to;
    this.log.info({ from, to, term: this.state.term, seq: this.state.seq, main: this.primaryAddress }, `tracker role ${from} -> ${to}`);
    this.opts.onRoleChange(from, to);
  }

  /** backup when following a main whose state we copied in its term; syncing otherwise. */
  private settleRole(): void {
    if (this.role === 'primary' || this.role === 'candidate') return;
    const f = this.following;
    this.setRole(f && this.copied?.rank === f.rank && this.copied.term === f.term ? 'backup' : 'syncing');
  }

  private others(): Member[] {
    return this.members.filter((m): m is Member => m !== undefined);
  }

  private view(): View {
    return { rank: this.selfRank, term: this.state.term, seq: this.state.seq, primary: this.isPrimary, stateful: this.state.stateful };
  }

  private reachable(m: Member): boolean {
    return m.heardAt !== undefined && this.clock.now() - m.heardAt < this.opts.failoverMs;
  }

  /** The followed main is reachable and acting (or, just after a handover to it, about to act). */
  private mainAlive(): boolean {
    if (!this.following) return false;
    const main = this.members[this.following.rank]!;
    return this.reachable(main) && (main.primary || this.clock.now() - this.followingSince < this.opts.failoverMs);
  }

  private maxKnownTerm(): number {
    return Math.max(this.state.term, ...this.others().map((m) => m.term));
  }

  /** The member a request on `conn` comes from; the rank it claims must be another member's. */
  private memberOn(conn: Connection, rank: number): Member {
    const m = this.members[rank];
    if (!m) throw new P2PError('P2P_BAD_REQUEST', `rank ${rank} is not another tracker of this cluster (${this.labels.join(',')})`);
    const authenticated = this.authenticatedRanks.get(conn);
    if (authenticated !== undefined && authenticated !== rank) throw new P2PError('P2P_UNAUTHORIZED', `rank ${rank} claimed on a link authenticated as rank ${authenticated}`);
    const known = this.connRanks.get(conn);
    if (known === undefined) {
      this.connRanks.set(conn, rank);
      // A main's stream of writes is this connection: if it breaks, writes may have been missed.
      conn.on('close', () => {
        if (this.following?.rank === rank && this.synced && !this.stopped) {
          this.synced = false;
          this.log.info({ main: m.address }, `replication stream from ${m.address} closed; the state will be copied again`);
        }
      });
    } else if (known !== rank) {
      throw new P2PError('P2P_BAD_REQUEST', `rank ${rank} claimed on a connection of rank ${known}`);
    }
    m.heardAt = this.clock.now();
    return m;
  }

  /** Takes in another tracker's view (a heartbeat either way). */
  private observe(m: Member, v: View): void {
    m.heardAt = this.clock.now();
    m.term = v.term;
    m.seq = v.seq;
    m.primary = v.primary;
    m.stateful = v.stateful;
    const { state } = this;
    if (v.primary) {
      if (v.term < state.term) return; // an old main: our answer tells it our term, and it steps down
      if (this.isPrimary) {
        // Two mains: the newer term wins; in one term (two trackers split apart) the higher rank.
        if (v.term > state.term || m.rank < this.selfRank) this.follow(m.rank, v.term, `${m.address} is main in term ${v.term}`);
        return;
      }
      if (this.role === 'candidate' && v.term <= state.term) return;
      if (this.following?.rank === m.rank && this.following.term === v.term) return;
      if (!this.following || v.term > this.following.term || !this.reachable(this.members[this.following.rank]!)) {
        this.follow(m.rank, v.term, `${m.address} is main in term ${v.term}`);
      }
      return;
    }
    if (v.term > state.term && (this.isPrimary || this.role === 'candidate')) {
      state.setTerm(v.term);
      this.stepDown(`${m.address} knows a newer term (${v.term})`);
    }
  }

  /**
   * True if this tracker's own clock jumped past failover-ms since the last heartbeat period (SIGSTOP,
   * a long pause): another tracker may have taken over meanwhile. It then stops acting, and forgets what
   * it knew of the others (stale, and our freeze is not their silence), to find the acting main again
   * as at startup before it acts.
   */
  private noticeFreeze(): boolean {
    const now = this.clock.now();
    const gapMs = now - this.lastTickAt;
    if (this.size === 1 || gapMs <= this.opts.failoverMs) return false;
    this.lastTickAt = now;
    this.log.warn({ gapMs: Math.round(gapMs) }, `this tracker was frozen for ${Math.round(gapMs)} ms; looking for the acting main again`);
    this.stepDown(`frozen for ${Math.round(gapMs)} ms, longer than failover-ms; another tracker may have taken over`);
    this.startedAt = now;
    for (const m of this.others()) {
      m.heardAt = undefined;
      m.primary = false;
    }
    return true;
  }

  private tick(): void {
    if (this.stopped) return;
    this.noticeFreeze();
    this.lastTickAt = this.clock.now();
    for (const m of this.others()) this.sendHeartbeat(m);
    this.evaluate();
  }

  private sendHeartbeat(m: Member): void {
    if (m.heartbeatInFlight) return;
    m.heartbeatInFlight = true;
    m.link
      .request('HEARTBEAT', this.view(), 'HEARTBEAT_ACK', this.opts.failoverMs)
      .then(
        (ack) => this.observe(m, ack),
        () => undefined,
      )
      .finally(() => {
        m.heartbeatInFlight = false;
      });
  }

  /** Decides what to do next; runs every heartbeat period. */
  private evaluate(): void {
    if (this.stopped || this.size === 1) return;
    if (this.isPrimary) {
      if (this.size >= 3) {
        const heard = this.others().filter((m) => this.reachable(m)).length + 1;
        if (heard < this.majority) this.stepDown(`hears only ${heard} of ${this.size} trackers; a main needs a majority`);
      }
      return;
    }
    if (this.takeover) return;
    if (this.following) {
      const main = this.members[this.following.rank]!;
      if (!this.mainAlive()) {
        const why = this.reachable(main) ? 'is not acting as main' : 'silent';
        this.log.warn({ main: main.address, failoverMs: this.opts.failoverMs }, `main ${main.address} ${why} for ${this.opts.failoverMs} ms`);
        this.following = undefined;
        this.synced = false;
        this.settleRole();
      } else {
        if (!this.synced) this.startSync();
        else if (this.state.store.hasJournal()) this.startMerge();
        else if (this.selfRank < this.following.rank) this.takeCommand();
        return;
      }
    }
    const acting = this.others()
      .filter((m) => m.primary && this.reachable(m) && m.term >= this.state.term)
      .sort((a, b) => b.term - a.term || a.rank - b.rank)[0];
    if (acting) {
      this.follow(acting.rank, acting.term, `${acting.address} is main in term ${acting.term}`);
      return;
    }
    if (this.mayRun()) this.runForMain();
  }

  /** Whether this tracker should try to become main now that no main is acting. */
  private mayRun(): boolean {
    const { state } = this;
    const now = this.clock.now();
    for (const m of this.others()) {
      // Just started: first hear from everyone, or wait a failover period, to find an acting main.
      if (m.heardAt === undefined && now - this.startedAt < this.opts.failoverMs) return false;
      if (!this.reachable(m)) continue;
      if (m.stateful && !state.stateful) return false; // fresh data never runs while state is reachable
      const atLeastAsGood = (m.stateful || !state.stateful) && m.seq >= state.seq;
      if (m.rank < this.selfRank && atLeastAsGood) return false; // a higher-ranked one will act
      if (m.seq > state.seq && atLeastAsGood) return false; // one with more state will act
    }
    return true;
  }

  private follow(rank: number, term: number, why: string): void {
    if (term > this.state.term) this.state.setTerm(term);
    if (this.following?.rank === rank && this.following.term === term && !this.isPrimary && this.role !== 'candidate') return;
    this.log.info({ main: this.labels[rank], term }, `following ${this.labels[rank]}: ${why}`);
    if (this.isPrimary || this.role === 'candidate') this.stepDown(why, { rank, term });
    else this.setFollowing({ rank, term });
    this.startSync();
  }

  private setFollowing(main: { rank: number; term: number } | undefined): void {
    this.following = main;
    this.followingSince = this.clock.now();
    this.lastSyncAttemptAt = -Infinity;
    this.synced = false;
    this.settleRole();
  }

  /** Stops acting as main (or candidate); `next` is the main to follow, when known. */
  private stepDown(why: string, next?: { rank: number; term: number }): void {
    if (!this.isPrimary && this.role !== 'candidate') return;
    this.log.warn({ term: this.state.term, reason: why }, `stepping down: ${why}`);
    this.sweepTimer?.cancel();
    // Set before the role changes, so the peers are told where the main is now.
    this.following = next;
    this.followingSince = this.clock.now();
    this.lastSyncAttemptAt = -Infinity;
    this.synced = false;
    this.setRole('syncing');
  }

  /** Copies the followed main's full state, then applies its writes in order. */
  private startSync(): void {
    if (this.syncing || !this.following || this.stopped) return;
    // At most once a heartbeat period: a main that is down or not yet acting refuses at once.
    if (this.clock.now() - this.lastSyncAttemptAt < this.opts.heartbeatMs) return;
    this.lastSyncAttemptAt = this.clock.now();
    const target = this.following;
    const main = this.members[target.rank]!;
    let restored!: () => void;
    this.restoring = new Promise<void>((resolve) => (restored = resolve));
    this.syncing = (async () => {
      try {
        const started = this.clock.now();
        const res = await main.link.request('SYNC_REQUEST', { rank: this.selfRank, term: target.term }, 'SYNC_STATE', Math.max(10_000, this.opts.failoverMs * 5));
        if (this.following !== target || this.stopped) return;
        if (res.term !== target.term) throw new P2PError('P2P_STALE_TERM', `asked for the state of term ${target.term}, got term ${res.term}`);
        const before = new Map(this.state.blacklistEntries().map((e) => [e.target, e]));
        this.state.restore(parseSnapshot(res.state));
        this.synced = true;
        this.copied = target;
        this.lastSyncError = '';
        this.announceBlacklistDiff(before);
        this.log.info({ main: main.address, term: res.term, seq: res.seq, ms: Math.round(this.clock.now() - started) }, `copied the state of ${main.address} (seq ${res.seq})`);
        this.settleRole();
      } catch (err) {
        const message = toP2PError(err).message;
        if (message !== this.lastSyncError) this.log.info({ main: main.address, err: message }, `could not copy the state of ${main.address} yet`);
        this.lastSyncError = message;
        return;
      } finally {
        restored();
        this.restoring = undefined;
        this.syncing = undefined;
      }
      this.evaluate();
    })();
  }

  /** Peers connected to this tracker learn of blacklist changes a copied state brought. */
  private announceBlacklistDiff(before: Map<string, { target: string; since: number }>): void {
    const after = this.state.blacklistEntries();
    for (const e of after) if (!before.has(e.target)) this.opts.onApplied({ op: 'blacklist-add', entry: e });
    const kept = new Set(after.map((e) => e.target));
    for (const target of before.keys()) if (!kept.has(target)) this.opts.onApplied({ op: 'blacklist-rm', target, by: 'sync', time: this.clock.wallNow() });
  }

  /** Hands writes this tracker acknowledged alone to the main it now follows. */
  private startMerge(): void {
    if (this.merging || !this.following) return;
    const target = this.following;
    const main = this.members[target.rank]!;
    const journal = this.state.store.journal();
    if (journal.length === 0) return;
    this.merging = (async () => {
      try {
        const ops = journal.map((j) => decodeOp(j.op));
        await main.link.request('MERGE', { rank: this.selfRank, term: target.term, ops: JSON.stringify(ops) }, 'OK', Math.max(10_000, this.opts.failoverMs * 5));
        this.state.store.clearJournal(journal[journal.length - 1]!.id);
        this.log.info({ main: main.address, writes: journal.length }, `merged ${journal.length} writes acknowledged alone into ${main.address}`);
      } catch (err) {
        this.log.warn({ main: main.address, err: toP2PError(err).message }, `could not merge writes into ${main.address} yet`);
      } finally {
        this.merging = undefined;
      }
    })();
  }

  /** No main is acting: become main, with the votes of a majority when there are three or more. */
  private runForMain(): void {
    if (this.takeover) return;
    this.takeover = (async () => {
      const term = this.maxKnownTerm() + 1;
      const { state } = this;
      if (this.size >= 3) {
        const voters = this.others().filter((m) => this.reachable(m));
        if (voters.length + 1 < this.majority) return;
        this.setRole('candidate');
        this.log.info({ term, voters: voters.map((m) => m.address) }, `no main is acting; asking for votes for term ${term}`);
        const answers = await Promise.allSettled(
          voters.map((m) => m.link.request('VOTE_REQUEST', { rank: this.selfRank, term, seq: state.seq, stateful: state.stateful }, 'VOTE', this.opts.failoverMs)),
        );
        if (this.role !== 'candidate' || this.stopped) return;
        const granted = 1 + answers.filter((a) => a.status === 'fulfilled' && a.value.granted).length;
        for (const a of answers) if (a.status === 'fulfilled' && a.value.term > term) state.setTerm(a.value.term);
        if (granted < this.majority || term <= state.term) {
          this.log.info({ term, granted, needed: this.majority }, `takeover for term ${term} failed: ${granted} of ${this.majority} votes`);
          this.setRole('syncing');
          return;
        }
        this.log.info({ term, granted }, `won ${granted} of ${this.size} votes`);
      } else {
        this.log.warn({ term }, `no main is acting; taking over in term ${term}`);
      }
      state.setTerm(term); // durable before acting in it
      this.becomePrimary();
    })().finally(() => {
      this.takeover = undefined;
    });
  }

  /** Chain of command: we outrank the main we follow and hold its state; take command from it. */
  private takeCommand(): void {
    if (this.takeover || !this.following) return;
    const main = this.members[this.following.rank]!;
    this.takeover = (async () => {
      const term = this.maxKnownTerm() + 1;
      const { state } = this;
      this.log.info({ main: main.address, term }, `outranking main ${main.address}: taking command in term ${term}`);
      // The main stops taking writes, lets those in flight reach us, then answers: we then hold them all.
      let answer: Body<'VOTE'>;
      try {
        answer = await main.link.request('TAKE_COMMAND', { rank: this.selfRank, term, seq: state.seq }, 'VOTE', this.opts.failoverMs * 2);
      } catch (err) {
        this.log.warn({ main: main.address, err: toP2PError(err).message }, `${main.address} did not answer the handover`);
        return;
      }
      if (this.stopped) return;
      if (!answer.granted) {
        this.log.info({ main: main.address, theirTerm: answer.term }, `${main.address} refused the handover`);
        if (answer.term > state.term) state.setTerm(answer.term);
        return;
      }
      state.setTerm(Math.max(term, state.term)); // durable before acting in it
      this.following = undefined;
      this.setRole('candidate');
      let granted = 2;
      const rest = this.others().filter((m) => m.rank !== main.rank && this.reachable(m));
      if (rest.length > 0) {
        const answers = await Promise.allSettled(
          rest.map((m) => m.link.request('TAKE_COMMAND', { rank: this.selfRank, term: state.term, seq: state.seq }, 'VOTE', this.opts.failoverMs)),
        );
        granted += answers.filter((a) => a.status === 'fulfilled' && a.value.granted).length;
      }
      if (this.role !== 'candidate' || this.stopped) return;
      if (this.size >= 3 && granted < this.majority) {
        this.log.warn({ granted, needed: this.majority }, `handover in term ${state.term} got ${granted} of ${this.majority} votes`);
        this.setRole('syncing');
        return;
      }
      this.becomePrimary();
    })().finally(() => {
      this.takeover = undefined;
    });
  }

  private becomePrimary(): void {
    const { state } = this;
    this.following = undefined;
    this.synced = false;
    this.replicator.clear(state.term);
    // Moves seq on by two: see the note on 'term' in state.ts.
    state.apply({ op: 'term', term: state.term }, state.seq + 2);
    this.setRole('primary');
    for (const m of this.others()) this.sendHeartbeat(m);
    // Writes this tracker acknowledged alone may have been wiped by a later copy: put them back.
    if (state.store.hasJournal()) {
      this.mergeLocal(state.store.journal().map((j) => decodeOp(j.op)), false).catch((err: unknown) => {
        this.log.warn({ err: toP2PError(err).message }, 'could not re-apply writes acknowledged alone earlier');
      });
    }
    this.sweepTimer?.cancel();
    const term = state.term;
    const leaseMs = this.opts.leaseMs;
    if (leaseMs && this.opts.isPeerConnected) {
      this.sweepTimer = this.clock.setTimeout(() => this.sweepOrphans(term), leaseMs);
    }
  }

  /** After a takeover: holders whose peers never reconnected within the lease are gone. */
  private sweepOrphans(term: number): void {
    if (!this.isPrimary || this.state.term !== term || !this.opts.isPeerConnected) return;
    const orphans = this.state.peerIds().filter((id) => !this.opts.isPeerConnected!(id));
    if (orphans.length === 0) return;
    this.log.info({ peers: orphans.length }, `dropping ${orphans.length} peers that did not reconnect after the takeover`);
    for (const peerId of orphans) {
      this.commit({ op: 'drop-peer', peerId }).catch((err: unknown) => this.log.warn({ err: toP2PError(err).message, peerId }, 'could not drop a departed peer'));
    }
  }

  private async mergeLocal(ops: Op[], journal: boolean): Promise<number> {
    let applied = 0;
    for (const op of ops) {
      if (!mergeable(op, this.state)) continue;
      await this.write(op, journal);
      applied++;
    }
    return applied;
  }

  // --- requests from the other trackers ------------------------------------------------------------------

  private async onReplicate(req: IncomingRequest<'REPLICATE'>, conn: Connection): Promise<void> {
    const rank = this.connRanks.get(conn);
    if (rank === undefined) throw new P2PError('P2P_UNEXPECTED_MESSAGE', 'REPLICATE before HEARTBEAT on a tracker link');
    const m = this.memberOn(conn, rank);
    const { term, seq } = req.body;
    const { state } = this;
    if (term < state.term) throw new P2PError('P2P_STALE_TERM', `write ${seq} of term ${term} refused: ${this.selfAddress} is in term ${state.term}`);
    if (this.following?.rank !== rank || this.following.term !== term) {
      const acting = this.isPrimary || this.role === 'candidate';
      if (term > state.term || (!acting && !this.mainAlive()) || (this.isPrimary && rank < this.selfRank)) {
        this.follow(rank, term, `${m.address} replicates in term ${term}`);
      }
      throw new P2PError('P2P_REPLICATION_FAILED', `${this.selfAddress} does not follow ${m.address} in term ${term}; it copies the state first`);
    }
    if (this.restoring) await this.restoring;
    if (!this.synced || this.following?.rank !== rank || this.following.term !== term) {
      throw new P2PError('P2P_REPLICATION_FAILED', `${this.selfAddress} has no copy of the state of ${m.address} yet`);
    }
    if (seq <= state.seq) {
      conn.reply(req.requestId, 'OK', {});
      return;
    }
    if (seq !== state.seq + 1) {
      this.synced = false;
      this.settleRole();
      throw new P2PError('P2P_REPLICATION_FAILED', `write ${seq} arrived after ${state.seq}: writes were missed; copying the state again`);
    }
    const op = decodeOp(req.body.op);
    state.apply(op, seq);
    this.opts.onApplied(op);
    conn.reply(req.requestId, 'OK', {});
  }

  private async onSyncRequest(req: IncomingRequest<'SYNC_REQUEST'>, conn: Connection): Promise<void> {
    const m = this.memberOn(conn, req.body.rank);
    this.requirePrimary();
    if (req.body.term !== this.state.term) throw new P2PError('P2P_STALE_TERM', `asked for term ${req.body.term}; this main is in term ${this.state.term}`);
    const stream = await m.link.open();
    // Taken between two writes: the snapshot holds every write before it, the stream every one after.
    const taken = this.applyChain.then(() => {
      this.requirePrimary();
      const snapshot = this.state.snapshot();
      this.replicator.add(m.rank, stream, this.state.term);
      return { term: this.state.term, seq: snapshot.seq, text: JSON.stringify(snapshot) };
    });
    this.applyChain = taken.catch(() => undefined);
    const { term, seq, text } = await taken;
    conn.reply(req.requestId, 'SYNC_STATE', { term, seq, state: text });
    this.log.info({ tracker: m.address, seq }, `${m.address} copied the state (seq ${seq}); it is in sync`);
    // Every tracker now holds every write: none is held here alone any more.
    if (this.replicator.size === this.size - 1 && this.state.store.hasJournal()) this.state.store.clearJournal();
  }

  private onVoteRequest(req: IncomingRequest<'VOTE_REQUEST'>, conn: Connection): void {
    const { rank, term, seq, stateful } = req.body;
    const m = this.memberOn(conn, rank);
    const { state } = this;
    const refuse = (why: string): void => {
      this.log.info({ candidate: m.address, term, reason: why }, `vote for ${m.address} in term ${term} refused: ${why}`);
      conn.reply(req.requestId, 'VOTE', { granted: false, term: state.term });
    };
    if (term <= state.term) return refuse(`this tracker is already in term ${state.term}`);
    if (this.isPrimary) return refuse('this tracker is the acting main');
    if (this.role === 'candidate') return refuse('this tracker is running too');
    if (this.mainAlive()) return refuse(`main ${this.labels[this.following!.rank]} is alive`);
    if (state.stateful && !stateful) return refuse('the candidate has no state');
    if (seq < state.seq) return refuse(`the candidate has seq ${seq}, this tracker ${state.seq}`);
    state.setTerm(term);
    this.log.info({ candidate: m.address, term }, `vote for ${m.address} in term ${term} granted`);
    conn.reply(req.requestId, 'VOTE', { granted: true, term });
  }

  private async onTakeCommand(req: IncomingRequest<'TAKE_COMMAND'>, conn: Connection): Promise<void> {
    const { rank, term, seq } = req.body;
    const m = this.memberOn(conn, rank);
    const { state } = this;
    const answer = (granted: boolean, why: string): void => {
      this.log.info({ from: m.address, term, granted, reason: why }, `handover to ${m.address} in term ${term} ${granted ? 'granted' : 'refused'}: ${why}`);
      conn.reply(req.requestId, 'VOTE', { granted, term: state.term });
    };
    if (term <= state.term) return answer(false, `this tracker is already in term ${state.term}`);
    if (this.role === 'candidate') return answer(false, 'this tracker is taking command itself');
    if (this.isPrimary) {
      if (!this.replicator.has(rank)) return answer(false, `${m.address} is not an in-sync backup`);
      state.setTerm(term);
      this.stepDown(`${m.address} outranks this tracker and takes command in term ${term}`, { rank, term });
      // Let writes in flight reach it (they fail here: this tracker is no longer main).
      await this.ackChain;
      if (!this.replicator.has(rank)) return answer(false, `${m.address} missed a write during the handover`);
      return answer(true, 'in sync');
    }
    if (seq < state.seq) return answer(false, `it has seq ${seq}, this tracker ${state.seq}`);
    state.setTerm(term);
    this.setFollowing({ rank, term });
    return answer(true, 'it holds at least our state');
  }

  private async onMerge(req: IncomingRequest<'MERGE'>, conn: Connection): Promise<void> {
    const m = this.memberOn(conn, req.body.rank);
    this.requirePrimary();
    if (req.body.term !== this.state.term) throw new P2PError('P2P_STALE_TERM', `merge for term ${req.body.term}; this main is in term ${this.state.term}`);
    const applied = await this.mergeLocal(decodeOps(req.body.ops), true);
    this.log.info({ from: m.address, applied }, `merged ${applied} writes ${m.address} had acknowledged alone`);
    conn.reply(req.requestId, 'OK', {});
  }
}
