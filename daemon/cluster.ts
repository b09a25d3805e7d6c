/**
 * The tracker cluster, wired to the real world: the rules live in daemon/raft/node.ts (a deterministic
 * state machine that the simulation in bench/cluster-sim.ts checks under thousands of fault schedules);
 * this file gives it a clock, links to the other trackers (tracker-link.ts), and the tracker's writes.
 *
 * - `--cluster A,B,C` lists every tracker in rank order; a tracker's rank is the place of its own
 *   `--listen` in that list. Rank decides who runs first after a main falls silent, and who takes
 *   command back: a main hands command to a higher-ranked backup once it holds the main's whole log.
 * - `commit(op)` writes an op to the main's log and resolves once it is committed (held by a majority,
 *   or with two trackers by this one alone when the other is silent) and applied here. Peers connected
 *   to any tracker hear of a blacklist change only when that tracker applies it, so never before it is
 *   committed. A write whose main loses command before it commits is answered with an error that says
 *   it may or may not be kept.
 * - One tracker alone is a cluster of one: it elects itself at once and commits every write alone.
 * - Guarantees and their limits: the README's "Replication" section, and node.ts.
 */
import os from 'node:os';
import type { Logger } from 'pino';
import { formatAddress, P2PError, toP2PError, type Address, type Body, type Clock, type Connection, type PinnedAddress, type Timer, type TlsIdentity } from '../protocol/index.js';
import type { MemberKeys } from './member-keys.js';
import type { Op } from './ops.js';
import { isRaftMessage, type RaftMessage } from './raft/messages.js';
import { NotMainError, RaftNode, type TrackerRole } from './raft/node.js';
import type { TrackerState } from './state.js';
import { TrackerLink } from './tracker-link.js';

export type { TrackerRole } from './raft/node.js';

/** Leases the sweep after a takeover waits while peers are still coming back (at most). */
const MAX_SWEEP_WAITS = 6;
/**
 * Departed peers the sweep drops at a time: the next slice is proposed once this one is committed and
 * applied. Every tracker applies each drop (about 1.4 ms for a peer of 100 files at 500,000 entries, most
 * of it taking its names out of the search index); 1,500 of them in one batch held all three trackers
 * 2.1-2.7 s at once in bench:fleet's 5,000-peer takeover, past --failover-ms, and each stepped down. 32
 * at a time is about 45 ms.
 */
export const SWEEP_SLICE = 32;

export interface ClusterOptions {
  self: Address;
  members: PinnedAddress[];
  state: TrackerState;
  heartbeatMs: number;
  failoverMs: number;
  /** After a takeover, holdings of peers that have not reconnected within this long are dropped. */
  leaseMs?: number;
  logger: Logger;
  clock: Clock;
  /** A blacklist change was applied here (a ban or a removal): tell the peers. */
  onApplied: (op: Op) => void;
  onRoleChange: (from: TrackerRole, to: TrackerRole) => void;
  /** This tracker, not main, follows a main it did not follow before (primaryAddress changed). */
  onFollow?: () => void;
  /** This tracker's key and certificate, presented on its links. */
  identity: TlsIdentity;
  /** The key each member must prove. */
  memberKeys: MemberKeys;
  /** Whether a peer has a session with this tracker (for the sweep after a takeover). */
  isPeerConnected?: (peerId: string) => boolean;
  /**
   * Whether clients are in the middle of connecting (TLS handshakes under way or waiting their turn): the
   * sweep after a takeover waits while they are, as it does while more peers are back than before.
   */
  peersArriving?: () => boolean;
  /**
   * Drops a peer that did not come back (the sweep), as the tracker writes about a peer: while the drop is
   * in flight, a REGISTER from that peer is written after it rather than taken as a re-announcement of
   * what the main still lists, which the drop would then remove (default: a plain commit).
   */
  dropPeer?: (peerId: string) => Promise<void>;
  /**
   * A write made here through commit() ended: committed (`failure` undefined) after `seconds` from
   * propose to commit, or not kept (`failure` is the error's code). For --metrics.
   */
  onWriteDone?: (op: Op['op'], seconds: number, failure?: string) => void;
  /** The peers with a session here, in use or standby (RaftNodeOptions.peerSessions). */
  peerSessions?: () => number;
  /** The longest a main waits for a returning higher rank to gather its peers' sessions (RaftNodeOptions). */
  takebackWaitMs?: number;
  takebackStragglers?: number;
}

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

interface Proposal {
  op: Op;
  /** performance.now() when commit() was called. */
  proposedAt: number;
  resolve: () => void;
  reject: (err: P2PError) => void;
}

interface Waiter {
  term: number;
  op: Op['op'];
  /** performance.now() at propose. */
  proposedAt: number;
  resolve: () => void;
  reject: (err: P2PError) => void;
  timer: Timer;
}

export class Cluster {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly state: TrackerState;
  private readonly selfRank: number;
  private readonly labels: string[];
  private readonly links: Array<TrackerLink | undefined> = [];
  private node: RaftNode | undefined;
  private selfAddress = '';
  private readonly waiters = new Map<number, Waiter>();
  /** Writes made in this turn of the event loop, proposed together at its end. */
  private proposals: Proposal[] = [];
  private tickTimer: Timer | undefined;
  private sweepTimer: Timer | undefined;
  private stopped = false;
  private lastTickAt = 0;
  private readonly attached = new WeakSet<Connection>();
  /** The links other trackers opened to this one and that are still open, by the rank they proved. */
  private readonly linksFrom = new Map<number, Set<Connection>>();

  constructor(private readonly opts: ClusterOptions) {
    this.log = opts.logger;
    this.clock = opts.clock;
    this.state = opts.state;
    this.selfRank = rankOf(opts.self, opts.members);
    if (opts.members.length > 1 && opts.failoverMs < 2 * opts.heartbeatMs) {
      throw new P2PError('P2P_BAD_REQUEST', `--failover-ms (${opts.failoverMs}) must be at least twice --heartbeat-ms (${opts.heartbeatMs})`);
    }
    this.labels = opts.members.map((m) => formatAddress(m.host, m.port));
    this.state.onBlacklistChange = ({ added, removed }) => {
      for (const entry of added) opts.onApplied({ op: 'blacklist-add', entry });
      for (const target of removed) opts.onApplied({ op: 'blacklist-rm', target, by: 'cluster', time: this.clock.wallNow() });
    };
  }

  private get size(): number {
    return this.opts.members.length;
  }

  get role(): TrackerRole {
    return this.node?.role ?? 'syncing';
  }

  get isPrimary(): boolean {
    return this.node?.isPrimary ?? false;
  }

  /** The main woke from a freeze and awaits a majority's answer (RaftNode.confirming): it takes no writes meanwhile. */
  get confirming(): boolean {
    return this.node?.confirming ?? false;
  }

  get term(): number {
    return this.node?.term ?? this.state.term;
  }

  get primaryAddress(): string | undefined {
    if (this.isPrimary) return this.selfAddress;
    const leader = this.node?.leader;
    return leader === undefined ? undefined : this.labels[leader];
  }

  /** Opens this tracker's link to `rank` if it is down (dialling it learns or checks its key). */
  reach(rank: number): void {
    this.links[rank]?.open().catch(() => undefined);
  }

  start(bound: Address): void {
    this.selfAddress = this.size === 1 ? formatAddress(bound.host, bound.port) : this.labels[this.selfRank]!;
    this.opts.members.forEach((address, rank) => {
      if (rank === this.selfRank) return;
      this.links[rank] = new TrackerLink({
        rank,
        selfRank: this.selfRank,
        address,
        label: this.labels[rank]!,
        selfPort: bound.port,
        identity: this.opts.identity,
        verifyKey: (key) => this.opts.memberKeys.checkDialled(rank, key),
        connectTimeoutMs: Math.max(200, Math.min(this.opts.failoverMs, 2000)),
        logger: this.log,
        clock: this.clock,
        onRefused: () => this.refused(rank),
      });
    });
    const node = new RaftNode({
      rank: this.selfRank,
      size: this.size,
      state: this.state,
      heartbeatMs: this.opts.heartbeatMs,
      failoverMs: this.opts.failoverMs,
      random: Math.random,
      now: this.clock.now(),
      send: (to, m) => this.links[to]?.send(JSON.stringify(m)),
      unsent: (to) => this.links[to]?.unsentBytes ?? 0,
      onApplied: (index, term) => this.settle(index, term),
      onRoleChange: (from, to, why) => this.roleChanged(from, to, why),
      // Peers whose sessions closed while it stood still were not dropped (it took no writes): the sweep,
      // as after a takeover, drops those still gone a lease later.
      onConfirmed: () => this.scheduleSweep(),
      onFollow: () => this.opts.onFollow?.(),
      note: (level, fields, message) => this.log[level](fields, message),
      peerSessions: this.opts.peerSessions,
      takebackWaitMs: this.opts.takebackWaitMs,
      takebackStragglers: this.opts.takebackStragglers,
    });
    this.node = node;
    this.lastTickAt = this.clock.now();
    this.log.info({ rank: this.selfRank, cluster: this.labels, term: node.term, applied: this.state.appliedIndex, last: node.log.lastIndex }, this.size === 1 ? 'tracker alone (no --cluster)' : 'joining the tracker cluster');
    if (this.size === 1) {
      node.tick(this.clock.now() + this.opts.failoverMs); // a cluster of one elects itself at once
    } else {
      this.tickTimer = this.clock.setInterval(() => this.tick(), Math.max(5, Math.floor(this.opts.heartbeatMs / 4)));
    }
  }

  stop(): void {
    this.stopped = true;
    this.tickTimer?.cancel();
    this.sweepTimer?.cancel();
    for (const link of this.links) link?.close();
    this.failWaiters(new P2PError('P2P_SHUTTING_DOWN', 'this tracker is shutting down'));
  }

  private tick(): void {
    if (this.stopped || !this.node) return;
    this.lastTickAt = this.clock.now();
    this.node.tick(this.lastTickAt);
  }

  requirePrimary(): void {
    // A write can reach a main that was frozen before its timers noticed: let it notice first.
    if (this.size > 1 && this.clock.now() - this.lastTickAt > this.opts.failoverMs) this.tick();
    if (this.confirming) {
      // It stood still past failover-ms and has not yet heard a majority since: another may have taken
      // over, and an answer from its own state (a ban already listed, files already held) could be stale.
      throw new P2PError('P2P_NOT_PRIMARY', 'this tracker stood still for a moment and is asking the others whether it is still the main; try again in a second');
    }
    if (this.isPrimary) return;
    const main = this.primaryAddress;
    throw new P2PError('P2P_NOT_PRIMARY', `this tracker is not the main (it is ${this.role}); ${main ? `the main is ${main}` : 'a takeover is under way; try again in a second'}`);
  }

  /**
   * Writes an op and resolves once it is committed and applied here (see the top of this file). Writes
   * are committed and answered in the order they were made. Writes made in one turn of the event loop
   * (the REGISTERs of many peers, say) go to the log together: one durable append, one fsync.
   */
  commit(op: Op): Promise<void> {
    try {
      this.requirePrimary();
    } catch (err) {
      // Never a synchronous throw: callers in timers and close handlers only attach .catch (a main that
      // notices here that it was frozen steps down or asks the others first, and its write is refused).
      return Promise.reject(toP2PError(err));
    }
    return new Promise<void>((resolve, reject) => {
      this.proposals.push({ op, proposedAt: performance.now(), resolve, reject });
      if (this.proposals.length === 1) setImmediate(() => this.proposeQueued());
    });
  }

  private proposeQueued(): void {
    const batch = this.proposals;
    this.proposals = [];
    if (batch.length === 0) return;
    const node = this.node!;
    let placed: Array<{ index: number; term: number }>;
    try {
      if (this.stopped) throw new P2PError('P2P_SHUTTING_DOWN', 'this tracker is shutting down');
      placed = node.proposeMany(batch.map((p) => p.op));
    } catch (err) {
      const e =
        err instanceof NotMainError
          ? new P2PError('P2P_NOT_PRIMARY', `this tracker is not the main${err.main === undefined ? '' : `; the main is ${this.labels[err.main]}`}: ${err.message}`)
          : toP2PError(err);
      for (const p of batch) this.fail({ op: p.op.op, proposedAt: p.proposedAt, reject: p.reject }, e);
      return;
    }
    const limitMs = 5 * this.opts.failoverMs;
    batch.forEach((p, i) => {
      const { index, term } = placed[i]!;
      if (this.state.appliedIndex >= index) {
        this.opts.onWriteDone?.(p.op.op, (performance.now() - p.proposedAt) / 1000);
        p.resolve(); // committed at once (acting alone)
        return;
      }
      const timer = this.clock.setTimeout(() => {
        const w = this.waiters.get(index);
        if (!w) return;
        this.waiters.delete(index);
        this.fail(w, new P2PError('P2P_REPLICATION_FAILED', `write ${index} was not committed within ${limitMs} ms; it may or may not be kept`));
      }, limitMs);
      this.waiters.set(index, { term, op: p.op.op, proposedAt: p.proposedAt, resolve: p.resolve, reject: p.reject, timer });
    });
  }

  /** An entry was applied here: answer the write waiting for it, if this tracker made it. */
  private settle(index: number, term: number): void {
    const w = this.waiters.get(index);
    if (!w) return;
    this.waiters.delete(index);
    w.timer.cancel();
    if (w.term !== term) return this.fail(w, new P2PError('P2P_REPLICATION_FAILED', `write ${index} was replaced by another main's; it was not kept`));
    this.opts.onWriteDone?.(w.op, (performance.now() - w.proposedAt) / 1000);
    w.resolve();
  }

  private fail(w: Pick<Waiter, 'op' | 'proposedAt' | 'reject'>, err: P2PError): void {
    this.opts.onWriteDone?.(w.op, (performance.now() - w.proposedAt) / 1000, err.code);
    w.reject(err);
  }

  private failWaiters(err: P2PError): void {
    for (const p of this.proposals.splice(0)) this.fail({ op: p.op.op, proposedAt: p.proposedAt, reject: p.reject }, err);
    for (const w of this.waiters.values()) {
      w.timer.cancel();
      this.fail(w, err);
    }
    this.waiters.clear();
  }

  private roleChanged(from: TrackerRole, to: TrackerRole, why: string): void {
    this.log.info({ from, to, term: this.term, applied: this.state.appliedIndex, main: this.primaryAddress, why }, `tracker role ${from} -> ${to}`);
    if (from === 'primary') {
      this.sweepTimer?.cancel();
      this.failWaiters(new P2PError('P2P_NOT_PRIMARY', `this tracker lost command (${why}); a write in flight may or may not be kept; the main is ${this.primaryAddress ?? 'being chosen'}`));
    }
    if (to === 'primary') this.scheduleSweep();
    this.opts.onRoleChange(from, to);
  }

  /**
   * After a takeover: holders whose peers did not reconnect are gone, once a lease has passed with no more
   * of them coming back. A crowd of thousands reconnects at the pace the new main takes connections;
   * dropping the peers still on their way would make each of them write all its files again.
   */
  private scheduleSweep(): void {
    const leaseMs = this.opts.leaseMs;
    const connected = this.opts.isPeerConnected;
    if (!leaseMs || !connected || this.size === 1) return;
    const term = this.term;
    let back = this.state.peerIds().filter((id) => connected(id)).length;
    let waits = 0;
    const sweep = (): void => {
      if (!this.isPrimary || this.term !== term) return;
      const known = this.state.peerIds();
      const orphans = known.filter((id) => !connected(id));
      if (orphans.length === 0) return;
      // Still coming back (more of them back than a lease ago, or a crowd still in the handshake queue: at
      // 5,000 peers no one had a session with the new main a lease after the kill, and all were dropped):
      // look again a lease later.
      const arriving = this.opts.peersArriving?.() === true;
      if ((known.length - orphans.length > back || arriving) && waits < MAX_SWEEP_WAITS) {
        back = known.length - orphans.length;
        waits++;
        this.log.info({ back, missing: orphans.length, arriving }, `${back} of ${known.length} peers are back since the takeover, and more are coming: the others are dropped once a lease passes without one`);
        this.sweepTimer = this.clock.setTimeout(sweep, leaseMs);
        return;
      }
      this.log.info({ peers: orphans.length }, `dropping ${orphans.length} peers that did not reconnect after the takeover`);
      const drop = this.opts.dropPeer ?? ((peerId: string) => this.commit({ op: 'drop-peer', peerId }));
      // A slice at a time, each committed and applied before the next is proposed. Proposed a slice per
      // turn without waiting, thousands of drops were in the log before the first came back from a backup,
      // so they committed together and the main applied them in one go (2.5 s at 5,000 peers: it took
      // itself for frozen and gave up command). Drops in flight when command is lost all fail together: the
      // first is logged, not thousands.
      let failed = 0;
      const dropSome = async (): Promise<void> => {
        while (orphans.length > 0) {
          if (this.stopped || !this.isPrimary || this.term !== term) return;
          const slice = orphans.splice(0, SWEEP_SLICE).filter((peerId) => !connected(peerId)); // back meanwhile: kept
          const refused: string[] = [];
          await Promise.all(
            slice.map((peerId) =>
              drop(peerId).catch((err: unknown) => {
                const e = toP2PError(err);
                if (e.code === 'P2P_NOT_PRIMARY') refused.push(peerId);
                if (failed++ === 0) this.log.warn({ err: e.message, peerId }, 'could not drop a departed peer (the sweep logs only its first failure)');
              }),
            ),
          );
          // Refused while still main in this term: a handover under way takes no writes. If it fails, this
          // main keeps command: go on a lease later rather than leave the rest listed until the next takeover.
          if (refused.length > 0 && !this.stopped && this.isPrimary && this.term === term) {
            orphans.unshift(...refused);
            await new Promise<void>((resolve) => {
              this.sweepTimer = this.clock.setTimeout(resolve, leaseMs);
            });
          }
        }
      };
      dropSome().catch((err: unknown) => this.log.error({ err: toP2PError(err).message }, 'the sweep of departed peers failed'));
    };
    this.sweepTimer?.cancel();
    this.sweepTimer = this.clock.setTimeout(sweep, leaseMs);
  }

  /**
   * A tracker link proved itself (tracker.ts): its RAFT messages now reach the cluster, as from `rank`.
   * Each link is the sender's own; its rank is the one its handshake proved.
   */
  attach(conn: Connection, rank: number | undefined): void {
    if (this.attached.has(conn)) return;
    this.attached.add(conn);
    if (rank !== undefined && !conn.isClosed) {
      let open = this.linksFrom.get(rank);
      if (!open) this.linksFrom.set(rank, (open = new Set()));
      open.add(conn);
      conn.once('close', () => {
        open.delete(conn);
        // Its link to us closed: see at once whether it still takes ours (a process that died does not).
        if (!this.stopped && open.size === 0) this.reach(rank);
      });
    }
    conn.on('event', (name: string, body: unknown) => {
      if (name !== 'RAFT' || this.stopped || !this.node || rank === undefined) return;
      this.onRaft(rank, (body as Body<'RAFT'>).message, conn);
    });
  }

  /**
   * Our dial to `rank` was refused. With no link of its own open to us either, its process is gone
   * (kill -9, a crash): two heartbeats of silence are enough, not failover-ms (RaftNode.peerGone). A
   * tracker frozen (SIGSTOP) still takes the dial into its queue, and one cut off by the network times
   * it out: both are waited for as before.
   */
  private refused(rank: number): void {
    const node = this.node;
    if (this.stopped || !node || (this.linksFrom.get(rank)?.size ?? 0) > 0) return;
    if (node.peerGone(this.clock.now(), rank)) {
      this.log.warn({ tracker: this.labels[rank] }, `the main, ${this.labels[rank]}, refused a connection and has no link open to this tracker: its process is gone; an election follows once it has missed two heartbeats, not failover-ms`);
    }
  }

  private onRaft(rank: number, text: string, conn: Connection): void {
    let m: unknown;
    try {
      m = JSON.parse(text);
    } catch {
      m = undefined;
    }
    if (!isRaftMessage(m)) {
      conn.close(new P2PError('P2P_MALFORMED', `a RAFT message from rank ${rank} is not a known cluster message`));
      return;
    }
    try {
      this.node!.receive(this.clock.now(), rank, m as RaftMessage);
    } catch (err) {
      this.log.warn({ from: this.labels[rank], kind: (m as RaftMessage).t, err: (err as Error).message }, `dropped a malformed ${(m as RaftMessage).t} message from ${this.labels[rank]}`);
    }
  }

  /** Requests on a tracker link: only events (RAFT) are spoken there now. */
  async onTrackerRequest(req: { name: string }, conn: Connection, authenticatedRank?: number): Promise<void> {
    this.attach(conn, authenticatedRank);
    throw new P2PError('P2P_UNEXPECTED_MESSAGE', `${req.name} is not a tracker-to-tracker request; trackers speak RAFT events`);
  }

  /**
   * On the main: each other tracker of --cluster, whether it was heard within failover-ms (two heartbeats
   * once it refused a connection: RaftNode.hears), and how many
   * entries of the main's log it has not applied yet (as of its last status, at most a heartbeat old).
   * Empty on a tracker that is not the main. For --metrics.
   */
  backups(): Array<{ rank: number; address: string; reachable: boolean; lagEntries: number }> {
    const node = this.node;
    if (!node?.isPrimary) return [];
    const now = this.clock.now();
    return this.opts.members.flatMap((_, rank) => {
      if (rank === this.selfRank) return [];
      const p = node.peers[rank];
      const reachable = node.hears(rank, now);
      return [{ rank, address: this.labels[rank]!, reachable, lagEntries: Math.max(0, node.log.lastIndex - (p?.applied ?? 0)) }];
    });
  }

  async status(): Promise<Body<'ADMIN_STATUS_RESULT'>['trackers']> {
    const { state } = this;
    const node = this.node;
    const commit = node?.commit ?? state.appliedIndex;
    const top = Math.max(commit, ...(node?.peers ?? []).map((p) => p?.applied ?? 0));
    // The hash is taken over several turns of the loop: it goes with an index only if nothing was applied
    // meanwhile (tried three times; else the last one, which may match no single state).
    let seq = state.appliedIndex;
    let hash = await state.stateHashInSlices();
    for (let tries = 1; tries < 3 && seq !== state.appliedIndex; tries++) {
      seq = state.appliedIndex;
      hash = await state.stateHashInSlices();
    }
    return this.opts.members.map((_, rank) => {
      if (rank === this.selfRank || !node) {
        return { address: this.selfAddress, role: this.role, term: this.term, reachable: true, seq, behind: Math.max(0, top - seq), hash };
      }
      const p = node.peers[rank];
      const up = !!p && node.hears(rank, this.clock.now());
      // Our main has applied at least what it told us is committed (its status may be a heartbeat old).
      const applied = Math.max(p?.applied ?? 0, rank === node.leader ? commit : 0);
      return { address: this.labels[rank]!, role: up ? p.role : 'unknown', term: p?.term ?? 0, reachable: up, seq: applied, behind: up ? Math.max(0, top - applied) : 0, hash: '' };
    });
  }
}
