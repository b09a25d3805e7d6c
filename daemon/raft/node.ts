/**
 * One tracker's part in the cluster, as a deterministic state machine: it is driven only by `tick(now)`,
 * `receive(now, from, message)` and `propose(op)`, and acts only through the callbacks it is given
 * (send a message, an entry was applied, the role changed). It reads no clock and opens no socket, so
 * the same code runs on real links (daemon/cluster.ts) and in the deterministic simulation
 * (bench/cluster-sim.ts), where thousands of schedules of crashes and partitions check its guarantees.
 *
 * The rules (Raft's, sections 5.1-5.4 of the paper, plus this cluster's own, marked *):
 * - Terms are recorded on disk before a tracker acts in them; a message of a newer term makes any
 *   tracker a follower in that term. * Each rank has its own terms (term mod size = rank), so two
 *   trackers are never main in the same term.
 * - Elections: a backup that hears no main for failover-ms (plus a step per rank, so the next in command
 *   goes first) asks for pre-votes, and only if a majority would vote does it start a new term and ask
 *   for votes (pre-vote: a tracker cut off cannot inflate terms and depose a healthy main). * A tracker
 *   that is running refuses its pre-vote to a worse-ranked one whose log is no further ahead (runsBefore),
 *   so the next in command wins even when both time out together. A vote goes
 *   only to a candidate whose log is at least as up to date, by (last term, last index), once per term,
 *   and never while the voter hears an acting main.
 * - The main writes each op to its log, sends it to every backup, and commits it once a majority hold it
 *   and it is of the main's term; only then is it applied, on the main and the backups, and only then is
 *   the client answered or any peer told. A main that does not hear a majority for failover-ms steps
 *   down.
 * - A backup whose log disagrees with the main's drops the disagreeing entries. * If it would have to drop
 *   entries it had already applied (only possible with two trackers split apart, or a wiped --data), it
 *   keeps every durable record it had as "pending merge", copies the main's snapshot, then hands those
 *   records to the main, which commits them as a merge: last writer wins per blacklist target by the
 *   (term, index) stamp of the write, removals are tombstones, reports are a set. Nothing it acknowledged
 *   is lost.
 * - A backup too far behind (or that restarted and so lost its holder lists) copies a snapshot, sent in
 *   parts of at most MAX_BATCH_BYTES, taken only once the main has committed an entry of its own term.
 * - * Chain of command: a main hands command to a higher-ranked backup that holds its whole log (Raft's
 *   leadership transfer): it stops taking writes and tells that backup to run at once.
 * - * Two trackers: a majority of two is both. So a tracker acts alone (takes over, commits) when the other
 *   has been silent for failover-ms. Split apart, both act, in different terms; on healing the older
 *   term's main steps down and merges as above.
 * - A tracker whose own clock jumped by more than failover-ms (it was paused) does not act on it: a candidate
 *   steps down; a main of three or more asks a majority at once whether its term holds, and takes no writes
 *   until one answers what it sent since it woke (noticeFreeze; with two trackers a main steps down).
 */
import type { DurableRecord, Op, SnapshotRecord } from '../ops.js';
import { encodeOp, decodeOp, isDurableOp, isDurableRecord } from '../ops.js';
import { DEFAULTS } from '../defaults.js';
import type { SnapshotInstall, SnapshotSource, TrackerState } from '../state.js';
import type { LogEntry, LogPosition } from './log.js';
import { RaftLog } from './log.js';
import { MAX_BATCH_BYTES, type RaftMessage } from './messages.js';
import { atLeastAsUpToDate, canActAlone, commitIndex, MAIN_IS_ACTING, majority, nextTerm, refuseVote } from './rules.js';

export type TrackerRole = 'primary' | 'backup' | 'syncing' | 'candidate';

export interface RaftNodeOptions {
  rank: number;
  size: number;
  state: TrackerState;
  heartbeatMs: number;
  failoverMs: number;
  send: (to: number, m: RaftMessage) => void;
  /** An entry was committed and applied (on every tracker, in log order). */
  onApplied?: (index: number, term: number, op: Op) => void;
  onRoleChange?: (from: TrackerRole, to: TrackerRole, why: string) => void;
  /**
   * A main that woke from a freeze heard a majority and keeps command (noticeFreeze). Writes it refused
   * meanwhile (the drop of a peer whose session closed while it stood still) are for the tracker to redo.
   */
  onConfirmed?: () => void;
  /** This tracker, not main, follows another main than before (by its rank). */
  onFollow?: (leader: number) => void;
  /** Log lines worth an operator's attention. */
  note?: (level: 'info' | 'warn', fields: Record<string, unknown>, message: string) => void;
  /** Random numbers in [0, 1): the epoch a main draws. */
  random: () => number;
  now: number;
  /** Applied entries kept in the log (KEEP_ENTRIES); the simulation keeps few, to fold the log often. */
  keepEntries?: number;
  /**
   * Bytes queued for that tracker and not yet written to the network. While the link is still writing
   * what was sent, nothing counts as lost: a slow link gets each batch once, not a new copy every beat.
   */
  unsent?: (to: number) => number;
  /**
   * The peers with a session at this tracker, in use or standby (said in status). A main hands command back
   * to a higher-ranked backup only once that backup has sessions from about as many peers as the main
   * (DEFAULTS.takebackStragglers), or after takebackWaitMs: the fleet's peers then promote a standby session at the
   * takeback instead of all dialling the returning main at once (docs/scaling.md). Without it (the
   * simulation), or from a tracker that does not say (release 0.1), command goes back at once.
   */
  peerSessions?: () => number;
  /** The longest a main waits for a higher-ranked backup to gather its peers' sessions (default DEFAULTS.takebackWaitMs). */
  takebackWaitMs?: number;
  /** Peers the returning tracker may lack and still take command back (default DEFAULTS.takebackStragglers). */
  takebackStragglers?: number;
}

/** What this tracker knows of another, from anything it last heard from it. */
export interface PeerView {
  heardAt: number;
  /** It refused a connection since it was last heard (peerGone): silent for two heartbeats is enough. */
  gone: boolean;
  term: number;
  role: string;
  last: LogPosition;
  applied: number;
  fresh: boolean;
  /** It holds records waiting to be merged into the main. */
  pending: boolean;
  /** The ranks it hears, itself included (its last status; undefined from release 0.1, or before one came). */
  hears: ReadonlySet<number> | undefined;
  /** Peers with a session at it (its last status; undefined when it does not say). */
  peers: number | undefined;
}

interface Follower {
  next: number;
  match: number;
  /** When the last append (or snapshot part) went out, and whether its answer is awaited. */
  sentAt: number;
  awaiting: boolean;
  /** The last entry of the append awaited: an answer that stops short of it answers an older message. */
  awaitingTo: number;
  repliedAt: number;
  /** The latest `round` its answers echoed (see noticeFreeze). */
  round: number;
  /**
   * A snapshot on its way: its records (taken whole at the start), the part sent and not yet acknowledged
   * (`current`, which ends before records[at]), serialized a part at a time as the backup acknowledges each.
   */
  snapshot: { id: number; records: SnapshotSource; at: number; part: number; current: string; head: LogPosition; agrees: boolean } | undefined;
  needSnapshot: boolean;
  /** The last entry the backup applied, as it last said. */
  applied: LogPosition | undefined;
  /** The backup's need for a snapshot that the last snapshot sent to it answers. */
  served: number;
  want: number;
}

/**
 * A link with more than this unsent is still writing a batch (batches are up to 512 KiB). Less is the
 * small change any link holds for a moment (TLS writes leave a status message in the buffer until the
 * next turn of the event loop): it must not keep a lost batch from being sent again.
 */
const BUSY_LINK_BYTES = 64 * 1024;

/** A returning tracker may lack a twentieth of the main's peers, if that is more than DEFAULTS.takebackStragglers. */
const TAKEBACK_STRAGGLER_SHARE = 1 / 20;

/** Entries kept in the log after they are applied, so a backup briefly behind catches up without a snapshot. */
export const KEEP_ENTRIES = 4096;

export class RaftNode {
  readonly log: RaftLog;
  role: TrackerRole = 'syncing';
  /** The main this tracker follows (its rank), when known. */
  leader: number | undefined;
  commit: number;
  readonly peers: Array<PeerView | undefined>;
  private readonly o: RaftNodeOptions;
  private readonly state: TrackerState;
  private epoch = 0;
  private now: number;
  private lastTick: number;
  /** How late this tick came after the one before (a stalled loop: see leadTick). */
  private tickGap = 0;
  /** When this tracker last heard its main (as a backup); an election is due failover-ms after. */
  private mainHeardAt: number;
  private votes = new Set<number>();
  private preVotes = new Set<number>();
  /** When this tracker last started to run (pre-votes, then votes); undefined when it is not running. */
  private runningSince: number | undefined;
  private electionAt: number;
  private followers = new Map<number, Follower>();
  private transferringTo: number | undefined;
  private transferUntil = 0;
  private transferSent = false;
  private handoverAfter = 0;
  /**
   * A main of three trackers or more that found it was frozen: when it woke (noticeFreeze). It keeps command
   * while it asks a majority whether its term still holds: it may not step down for a gap alone.
   */
  private confirmingSince: number | undefined;
  /** Sent in every append, and raised at each freeze: an answer echoing it was made after the wake. */
  private round = 0;
  /**
   * A handover under way when this main lost command: the rank it went to. If that rank then leads, the
   * handover worked; if this tracker is elected again instead, it failed (the target could not win after
   * all: a 0.1 tracker says nothing of whom it hears, and statuses are up to a heartbeat old), and the
   * next one waits longer each time.
   */
  private handedTo: number | undefined;
  private failedHandovers = 0;
  /** Higher ranks otherwise ready to take command back, waited for to gather their peers' sessions: since when. */
  private readonly gathering = new Map<number, number>();
  /** A snapshot being received: its id, and its records installed so far (into a table of their own). */
  private incoming: { id: number; from: number; term: number; install: SnapshotInstall; next: number } | undefined;
  /** This tracker gave up applied state and must copy the main's snapshot before applying anything. */
  private mustInstall = false;
  /** Not 0 while this tracker needs a snapshot: a number that names the need (see append-reply). */
  private want = 0;
  /** Merge batches in flight (as a backup) or waiting to commit (as main: index -> who asked). */
  private mergeSent: { id: number; at: number } | undefined;
  private mergesWaiting = new Map<number, { from: number; id: number; term: number }>();
  /**
   * Ops of log entries not yet applied, as objects: decoded once when a backup receives an entry (it is
   * checked then anyway), or the main's own soft ops as proposed. A REGISTER is about 13 KB of JSON, and
   * parsing it again to apply it was a tenth of a backup's work during a registration storm. Keyed by the
   * entry, so an entry replaced by a conflicting one is never applied with the old op.
   */
  private readonly decoded = new WeakMap<LogEntry, Op>();
  private snapshotIds = 0;
  /** Voters that refused this run's pre-vote because they still heard the main: asked again at the next tick. */
  private readonly askPreVotesAgain = new Set<number>();
  private statusAt = -Infinity;

  constructor(o: RaftNodeOptions) {
    this.o = o;
    this.state = o.state;
    this.log = new RaftLog(o.state.store);
    this.now = this.lastTick = this.mainHeardAt = o.now;
    this.peers = new Array<PeerView | undefined>(o.size).fill(undefined);
    // Entries between the last durable one applied and the snapshot point were soft: nothing to redo.
    if (this.state.appliedIndex < this.log.start.index) {
      this.state.appliedIndex = this.log.start.index;
      this.state.appliedTerm = this.log.start.term;
    }
    this.commit = this.state.appliedIndex;
    this.state.term = this.log.term;
    if (this.state.holdersLost) this.want = this.newWant(); // restarted: holder lists come with a snapshot
    this.electionAt = o.now + this.electionDelay();
  }

  get term(): number {
    return this.log.term;
  }

  get isPrimary(): boolean {
    return this.role === 'primary';
  }

  /** A main that woke from a freeze and has not yet heard a majority answer since (noticeFreeze): it must not act on its own state. */
  get confirming(): boolean {
    return this.confirmingSince !== undefined;
  }

  /** A tracker with no data at all. */
  get fresh(): boolean {
    return this.log.isEmpty && !this.state.stateful;
  }

  get hasPendingMerge(): boolean {
    return this.state.store.hasPending();
  }

  // --- driving ------------------------------------------------------------------------------------

  tick(now: number): void {
    this.now = now;
    this.tickGap = now - this.lastTick;
    if (this.tickGap > this.o.failoverMs && this.o.size > 1) this.noticeFreeze(this.tickGap);
    this.lastTick = now;
    if (now - this.statusAt >= this.o.heartbeatMs) {
      this.statusAt = now;
      for (let r = 0; r < this.o.size; r++) if (r !== this.o.rank) this.o.send(r, this.status());
    }
    if (this.role === 'primary') this.leadTick();
    else if (now >= this.electionAt) this.startElection(false);
    else {
      if (this.askPreVotesAgain.size > 0) this.preVoteAgain();
      this.sendMerge();
    }
  }

  /**
   * Rank `r` is gone, not merely slow: it refused a connection and no link from it is open (its process
   * died: kill -9, a crash, an OOM kill; the kernel answers for it). Until anything is heard from it
   * again, two heartbeats of silence count as failover-ms would: a backup whose main it was runs once
   * the main has missed its heartbeats (the next in rank first, as always), not after failover-ms of
   * silence. Not at once: told this wrongly of a main that lives, its next heartbeat still arrives in
   * time, and nothing changes. The vote rules do not change either, so this moves only when an election
   * starts: a matter of liveness, never of safety. Returns whether it brought this tracker's election
   * forward (it was the main this one follows, and still heard).
   */
  peerGone(now: number, r: number): boolean {
    this.now = now;
    const p = this.peers[r];
    if (r === this.o.rank || !p || p.gone) return false;
    const wasAlive = r === this.leader && this.mainAlive();
    p.gone = true;
    if (!wasAlive || this.role === 'primary' || this.role === 'candidate' || this.runningSince !== undefined) return false;
    // From the last word of any kind (its status messages and its appends keep timers of their own): with
    // two trackers, the backup acts alone only once it no longer hears the main at all.
    this.electionAt = Math.min(this.electionAt, Math.max(this.mainHeardAt, p.heardAt) + this.silenceMs(r) + this.rankStep());
    return true;
  }

  /** Proposes an op as main; returns the index it will have once committed. Throws if not main. */
  propose(op: Op): { index: number; term: number } {
    return this.proposeMany([op])[0]!;
  }

  /** Proposes ops in order, written to the log in one durable append (one fsync for them all). */
  proposeMany(ops: readonly Op[]): Array<{ index: number; term: number }> {
    if (this.role !== 'primary') throw new NotMainError(this.leader);
    if (this.transferringTo !== undefined) throw new NotMainError(this.transferringTo);
    const first = this.log.lastIndex + 1;
    const entries: LogEntry[] = ops.map((op, i) => ({ index: first + i, term: this.term, epoch: this.epoch, op: encodeOp(op) }));
    this.log.append(entries);
    // Soft ops (REGISTER and its kin) are made of plain strings, numbers and booleans by the tracker's
    // handlers, so the object applies exactly as its JSON does on the backups; the rest take the JSON path.
    ops.forEach((op, i) => {
      if (!isDurableOp(op)) this.decoded.set(entries[i]!, op);
    });
    for (const [r, f] of this.followers) if (!f.awaiting && !f.snapshot) this.sendAppend(r, f);
    this.advanceCommit();
    return entries.map((e) => ({ index: e.index, term: e.term }));
  }

  receive(now: number, from: number, m: RaftMessage): void {
    this.now = now;
    // A tracker that was paused handles what queued up only after it noticed the pause.
    if (now - this.lastTick > this.o.failoverMs && this.o.size > 1) this.tick(now);
    if (from === this.o.rank || from < 0 || from >= this.o.size) return;
    // Only the rank that owns a term can lead in it: anything a main sends must come from that rank.
    if ((m.t === 'append' || m.t === 'snapshot' || m.t === 'timeout-now') && m.term % this.o.size !== from) return;
    const peer = this.peers[from];
    if (m.t === 'status') {
      this.peers[from] = { heardAt: now, gone: false, term: m.term, role: m.role, last: m.last, applied: m.applied, fresh: m.fresh, pending: m.pending, hears: m.hears && new Set(m.hears), peers: m.peers };
      return;
    }
    if (peer) {
      peer.heardAt = now;
      peer.gone = false;
    } else this.peers[from] = { heardAt: now, gone: false, term: m.term, role: 'unknown', last: { index: 0, term: 0, epoch: 0 }, applied: 0, fresh: false, pending: false, hears: undefined, peers: undefined };
    // A vote request while a main is acting is ignored whole, so a tracker that was cut off cannot depose it.
    if (m.t === 'vote' && !m.pre && m.term > this.term && this.mainAlive() && !m.transfer) {
      this.o.send(from, { t: 'vote-reply', term: this.term, pre: false, granted: false, reason: MAIN_IS_ACTING });
      return;
    }
    if (m.term > this.term && !(m.t === 'vote' && m.pre)) {
      this.becomeFollower(m.term, undefined, `rank ${from} is in term ${m.term}`);
    }
    switch (m.t) {
      case 'append':
        return this.onAppend(from, m);
      case 'append-reply':
        return this.onAppendReply(from, m);
      case 'vote':
        return this.onVote(from, m);
      case 'vote-reply':
        return this.onVoteReply(from, m);
      case 'snapshot':
        return this.onSnapshot(from, m);
      case 'snapshot-reply':
        return this.onSnapshotReply(from, m);
      case 'merge':
        return this.onMerge(from, m);
      case 'merge-reply':
        return this.onMergeReply(m);
      case 'timeout-now':
        if (m.term === this.term && from === this.leader && !this.hasPendingMerge) this.startElection(true);
        return;
    }
  }

  // --- roles ----------------------------------------------------------------------------------------

  /** The one place the role changes. */
  private setRole(to: TrackerRole, why: string): void {
    const from = this.role;
    if (from === to) return;
    this.role = to;
    this.o.onRoleChange?.(from, to, why);
  }

  /** backup once it follows a main and holds a usable copy; syncing before. */
  private settle(): void {
    if (this.role === 'primary' || this.role === 'candidate') return;
    const ready = this.leader !== undefined && !this.mustInstall && !this.state.holdersLost && this.incoming === undefined;
    this.setRole(ready ? 'backup' : 'syncing', ready ? `following rank ${this.leader}` : 'copying the main\'s state');
  }

  private becomeFollower(term: number, leader: number | undefined, why: string): void {
    if (term > this.term) this.log.setHardState(term, undefined);
    this.state.term = this.term;
    const was = this.role;
    this.leader = leader;
    this.confirmingSince = undefined;
    this.followers.clear();
    this.gathering.clear();
    this.mergesWaiting.clear();
    if (was === 'primary' && this.transferringTo !== undefined) this.handedTo = this.transferringTo;
    this.transferringTo = undefined;
    this.votes.clear();
    this.preVotes.clear();
    this.runningSince = undefined;
    if (was === 'primary' || was === 'candidate') {
      this.setRole('syncing', why);
      this.electionAt = this.now + this.electionDelay();
    }
    this.settle();
  }

  private noticeFreeze(gapMs: number): void {
    this.o.note?.('warn', { gapMs: Math.round(gapMs) }, `this tracker was frozen for ${Math.round(gapMs)} ms; another may have taken over`);
    // Our freeze is not the others' silence: give them a fresh failover period.
    for (const p of this.peers) {
      if (!p) continue;
      p.heardAt = this.now;
      p.gone = false;
    }
    this.mainHeardAt = this.now;
    this.electionAt = this.now + this.electionDelay();
    if (this.role === 'primary' && this.o.size >= 3) {
      // Another may have taken over meanwhile, or (far more often, on a loaded machine) nobody did: the
      // others heard nothing for a moment. Stepping down for the gap alone made an election, a second
      // change of command and TRACKER_CHANGED to every peer, out of one slow turn of the loop (at 5,000
      // peers, a new main frozen 1,043 ms went term 4 -> 5 -> 7). So it asks first: a heartbeat round now,
      // and command is kept once a majority answers in this term, or given up after failover-ms without
      // (leadTick). Nothing it writes meanwhile is acknowledged unless a majority takes it in this term,
      // which a newer main's backups refuse; and an answer from a newer term makes it step down at once.
      // Frozen again before a majority answered: the same question stands (a new round would make every
      // answer one round behind on a loop that stalls each turn), and so does its deadline.
      if (this.confirmingSince !== undefined) return;
      this.confirmingSince = this.now;
      this.round++;
      // An append to each at once (not to one in the middle of a snapshot: sent again, its part would
      // make the backup start the install over).
      for (const f of this.followers.values()) if (!f.snapshot) f.sentAt = -Infinity;
      return;
    }
    if (this.role === 'primary' || this.role === 'candidate') this.becomeFollower(this.term, undefined, `frozen for ${Math.round(gapMs)} ms, longer than failover-ms`);
  }

  /** failover-ms, plus a step per tracker ranked above this one: the next in command runs first. */
  private electionDelay(): number {
    return this.o.failoverMs + this.rankStep();
  }

  /** Half a heartbeat per tracker ranked above this one, the main it follows not counted. */
  private rankStep(): number {
    const step = Math.max(1, Math.round(this.o.heartbeatMs / 2));
    const above = this.leader !== undefined && this.leader < this.o.rank ? this.o.rank - 1 : this.o.rank;
    return above * step;
  }

  private heard(r: number): boolean {
    return this.hears(r, this.now);
  }

  /** Whether rank `r` counts as heard at `now` (within failover-ms, or two heartbeats once it is gone): what admin status calls reachable. */
  hears(r: number, now: number): boolean {
    const p = this.peers[r];
    return !!p && now - p.heardAt < this.silenceMs(r);
  }

  /** How long rank `r` must be silent to count as not heard: failover-ms, or two heartbeats once it is gone (peerGone). */
  private silenceMs(r: number): number {
    return this.peers[r]?.gone ? Math.min(this.o.failoverMs, 2 * this.o.heartbeatMs) : this.o.failoverMs;
  }

  /** The ranks heard (within failover-ms, or two heartbeats for one that is gone: hears), this one included. */
  private ranksHeard(): number[] {
    const ranks: number[] = [];
    for (let r = 0; r < this.o.size; r++) if (r === this.o.rank || this.heard(r)) ranks.push(r);
    return ranks;
  }

  private othersHeard(): number {
    let n = 0;
    for (let r = 0; r < this.o.size; r++) if (r !== this.o.rank && this.heard(r)) n++;
    return n;
  }

  private mainAlive(): boolean {
    if (this.role === 'primary') return true;
    return this.leader !== undefined && this.now - this.mainHeardAt < this.silenceMs(this.leader);
  }

  // --- elections ------------------------------------------------------------------------------------

  private startElection(transfer: boolean): void {
    this.electionAt = this.now + this.electionDelay() + Math.floor(this.o.random() * this.o.heartbeatMs);
    if (this.mustInstall) return; // gave up its state: it may not lead until it has copied one
    if (canActAlone(this.o.size, this.othersHeard())) {
      this.o.note?.('warn', { term: this.term }, this.o.size === 1 ? 'taking command' : 'the other tracker is silent: taking over alone');
      this.log.setHardState(nextTerm(this.term, this.o.rank, this.o.size), this.o.rank);
      this.state.term = this.term;
      this.becomeMain();
      return;
    }
    if (transfer) return this.runReal(true);
    if (this.o.size === 2) {
      // The other may have gone silent only just now: look again the moment its failover period ends.
      const other = this.peers[1 - this.o.rank];
      if (other) this.electionAt = Math.min(this.electionAt, other.heardAt + this.silenceMs(1 - this.o.rank) + 1);
    }
    this.preVotes = new Set([this.o.rank]);
    this.askPreVotesAgain.clear();
    this.runningSince = this.now;
    const ask = this.preVoteAsk();
    for (let r = 0; r < this.o.size; r++) if (r !== this.o.rank) this.o.send(r, ask);
  }

  /** The pre-vote this tracker asks for: the next term of its own, with its log as it stands. */
  private preVoteAsk(): RaftMessage {
    return { t: 'vote', term: nextTerm(this.term, this.o.rank, this.o.size), last: this.log.last, pre: true, transfer: false };
  }

  /**
   * Asks again the voters that refused this run's pre-vote because they still heard the main (see
   * onVoteReply), while the run is young and no main is heard. Only the best-ranked tracker still heard
   * does so, so that a worse-ranked backup does not race the better one with retries of its own. (With
   * five trackers that does not settle the order: see docs/scaling.md.)
   */
  private preVoteAgain(): void {
    if (this.role === 'candidate' || this.preVotes.size === 0 || this.runningSince === undefined || this.now - this.runningSince >= this.o.failoverMs) {
      this.askPreVotesAgain.clear(); // this run is over
      return;
    }
    // Not yet: a main is heard, or a better-ranked tracker (other than the main) is, which goes first.
    if (this.mainAlive()) return;
    for (let r = 0; r < this.o.rank; r++) if (r !== this.leader && this.heard(r)) return;
    const ask = this.preVoteAsk();
    for (const r of this.askPreVotesAgain) if (!this.preVotes.has(r)) this.o.send(r, ask);
    this.askPreVotesAgain.clear();
  }

  private runReal(transfer: boolean): void {
    this.log.setHardState(nextTerm(this.term, this.o.rank, this.o.size), this.o.rank);
    this.state.term = this.term;
    this.leader = undefined;
    this.votes = new Set([this.o.rank]);
    this.runningSince = this.now;
    this.setRole('candidate', `running in term ${this.term}`);
    this.o.note?.('info', { term: this.term, transfer }, `asking for votes in term ${this.term}`);
    const ask: RaftMessage = { t: 'vote', term: this.term, last: this.log.last, pre: false, transfer };
    for (let r = 0; r < this.o.size; r++) if (r !== this.o.rank) this.o.send(r, ask);
  }

  private onVote(from: number, m: Extract<RaftMessage, { t: 'vote' }>): void {
    if (m.pre && this.runsBefore(from, m.last)) {
      this.o.send(from, { t: 'vote-reply', term: this.term, pre: true, granted: false, reason: `rank ${this.o.rank} outranks it and is running` });
      return;
    }
    const why = refuseVote(
      { term: this.term, last: this.log.last, votedFor: this.log.votedFor, mainAlive: this.mainAlive() },
      { candidate: from, term: m.term, last: m.last, pre: m.pre, transfer: m.transfer },
    );
    if (!why && !m.pre) {
      this.log.setHardState(this.term, from);
      this.electionAt = this.now + this.electionDelay();
    }
    this.o.send(from, { t: 'vote-reply', term: this.term, pre: m.pre, granted: !why, reason: why ?? '' });
  }

  /**
   * * Whether this tracker, which outranks `asker`, runs for main itself now, so that its pre-vote for
   * `asker` is refused. When the main dies, both backups' timers can fire within a few ms of each other
   * on a loaded machine (the rank step is half a heartbeat); terms are striped by rank, so the lower
   * ranked one runs in the higher term and wins, and the better one takes command from it a moment later:
   * two changes of main, and two storms of peers failing over (issue 12). So a better-ranked tracker that
   * is running, or whose own election is due (the ask is the sign that the main is gone: it runs at once),
   * refuses the worse one's pre-vote. Not when only the other can win or should: its log is further
   * ahead, or this one has lost its holder lists or is copying a snapshot (as main it would make every
   * peer announce again). And only for `window` from the start of its run, so a tracker that cannot win
   * (links that fail one way, five trackers that reach each other only in part) holds the others back for
   * a fraction of each round, not for good. Pre-votes change nothing, so this is a matter of liveness,
   * never of safety.
   */
  private runsBefore(asker: number, askerLast: LogPosition): boolean {
    if (asker < this.o.rank || this.role === 'primary' || this.mustInstall || this.state.holdersLost || this.incoming !== undefined) return false;
    if (!atLeastAsUpToDate(this.log.last, askerLast)) return false;
    // Two heartbeats, at most a quarter of failover-ms.
    const window = Math.min(2 * this.o.heartbeatMs, Math.floor(this.o.failoverMs / 4));
    const running = (): boolean => this.runningSince !== undefined && this.now - this.runningSince < window;
    if (!running() && this.now >= this.electionAt && !this.mainAlive()) this.startElection(false);
    return running();
  }

  private onVoteReply(from: number, m: Extract<RaftMessage, { t: 'vote-reply' }>): void {
    if (!m.granted) {
      // Refused because the voter still hears the main. A main's last messages reach its backups at
      // different moments (a heartbeat apart, more on a busy link), so the voter's failover period may
      // end just after this one's. Ask again at the next tick, for one failover period from the start of
      // this run, rather than a whole election delay later: meanwhile the worse-ranked voter fell due,
      // found this one no longer running, won, and then handed command back (two changes of main, and
      // two storms of peers failing over). Pre-votes change nothing, so this is a matter of liveness.
      if (m.pre && m.reason === MAIN_IS_ACTING && this.preVotes.size > 0 && this.runningSince !== undefined && this.now - this.runningSince < this.o.failoverMs) {
        this.askPreVotesAgain.add(from);
      }
      return;
    }
    if (m.pre) {
      if (this.role === 'primary' || this.preVotes.size === 0) return;
      this.preVotes.add(from);
      if (this.preVotes.size >= majority(this.o.size)) {
        this.preVotes.clear();
        this.runReal(false);
      }
      return;
    }
    if (this.role !== 'candidate' || m.term !== this.term) return;
    this.votes.add(from);
    if (this.votes.size >= majority(this.o.size)) this.becomeMain();
  }

  private becomeMain(): void {
    if (this.handedTo !== undefined) {
      // Elected again after handing command over: the handover failed. Wait before the next, longer each time.
      this.failedHandovers++;
      this.handoverAfter = this.now + this.o.failoverMs * 2 ** Math.min(this.failedHandovers, 6);
      this.o.note?.('warn', { to: this.handedTo, failed: this.failedHandovers }, `handover to rank ${this.handedTo} failed (it did not win); the next waits ${this.handoverAfter - this.now} ms`);
      this.handedTo = undefined;
    }
    this.leader = this.o.rank;
    this.votes.clear();
    this.runningSince = undefined;
    if (this.incoming) this.abandonSnapshot();
    this.epoch = 1 + Math.floor(this.o.random() * 0x7fff_ffff);
    this.followers.clear();
    this.gathering.clear();
    this.confirmingSince = undefined;
    for (let r = 0; r < this.o.size; r++) {
      if (r === this.o.rank) continue;
      this.followers.set(r, { next: this.log.lastIndex + 1, match: 0, sentAt: -Infinity, awaiting: false, awaitingTo: 0, repliedAt: this.now, round: 0, snapshot: undefined, needSnapshot: false, applied: undefined, served: 0, want: 0 });
    }
    this.setRole('primary', `main in term ${this.term}`);
    this.o.note?.('info', { term: this.term, last: this.log.lastIndex }, `main in term ${this.term}`);
    // Raft's no-op: committing it commits everything before it. A main that lost its holder lists
    // (it restarted) has every tracker drop theirs: peers announce their files again.
    this.propose({ op: 'term', term: this.term, resetHolders: this.state.holdersLost });
    this.leadTick();
  }

  // --- the main -------------------------------------------------------------------------------------

  /**
   * Check quorum: a main of three or more that does not hear a majority for failover-ms steps down (false).
   * After a freeze, one that hears a majority answer since it woke keeps command (noticeFreeze), and until
   * then, for failover-ms at most, it waits.
   */
  private holdsQuorum(now: number): boolean {
    if (this.o.size < 3) return true;
    const need = majority(this.o.size);
    const since = this.confirmingSince;
    let heard = 1;
    if (since !== undefined) {
      // Only answers to appends sent since the wake count: what came in while it stood still was read after
      // it woke, and says nothing of the term now.
      for (const f of this.followers.values()) if (f.round >= this.round) heard++;
      if (heard >= need) {
        this.confirmingSince = undefined;
        this.o.note?.('info', { term: this.term, waitedMs: now - since }, `still main in term ${this.term}: a majority answered after the freeze`);
        this.o.onConfirmed?.();
        return true;
      }
      if (now - since < this.o.failoverMs) return true;
    } else {
      // A tick that came late (the loop was busy, for less than failover-ms, or noticeFreeze would have seen
      // it) judges the others as of the tick before: answers that came since wait unread behind this timer.
      // At 5,000 peers a main stalled 0.9 s by its own work stepped down for a backup's silence that was its
      // own (term 4 -> 7, every peer moved twice). A backup truly silent is still found a tick later at most.
      const judgedAt = this.tickGap > 2 * this.o.heartbeatMs ? now - this.tickGap : now;
      for (const f of this.followers.values()) if (judgedAt - f.repliedAt < this.o.failoverMs) heard++;
      if (heard >= need) return true;
    }
    this.becomeFollower(this.term, undefined, `hears only ${heard} of ${this.o.size} trackers; a main needs a majority`);
    return false;
  }

  private leadTick(): void {
    const now = this.now;
    if (!this.holdsQuorum(now)) return;
    if (this.transferringTo !== undefined && now > this.transferUntil) {
      this.o.note?.('warn', { to: this.transferringTo }, `handover to rank ${this.transferringTo} did not happen; taking writes again`);
      this.transferringTo = undefined;
      this.handoverAfter = now + this.o.failoverMs; // take writes for a while before trying again
    }
    for (const [r, f] of this.followers) {
      if (f.awaiting && (this.o.unsent?.(r) ?? 0) > BUSY_LINK_BYTES) {
        f.sentAt = now; // still on its way out: the wait for an answer starts once it has left
        continue;
      }
      const due = now - f.sentAt >= this.o.heartbeatMs;
      const lost = f.awaiting && now - f.sentAt >= (f.snapshot ? this.o.failoverMs : 2 * this.o.heartbeatMs);
      if (!due && !lost) continue;
      if (f.awaiting && !lost) continue;
      if (f.snapshot) this.sendSnapshotPart(r, f);
      else if (f.needSnapshot) this.startSnapshot(r, f);
      else this.sendAppend(r, f);
    }
    this.advanceCommit();
    this.considerHandover();
    this.mergeOwnPending();
  }

  private sendAppend(r: number, f: Follower): void {
    if (f.next <= this.log.start.index) {
      f.needSnapshot = true;
      this.startSnapshot(r, f);
      return;
    }
    const prev = this.log.position(f.next - 1)!;
    const entries = this.log.slice(f.next, MAX_BATCH_BYTES);
    f.sentAt = this.now;
    f.awaiting = true;
    f.awaitingTo = prev.index + entries.length;
    this.o.send(r, { t: 'append', term: this.term, prev, entries, commit: this.commit, round: this.round });
  }

  private onAppendReply(from: number, m: Extract<RaftMessage, { t: 'append-reply' }>): void {
    const f = this.followers.get(from);
    if (this.role !== 'primary' || m.term !== this.term || !f) return;
    f.repliedAt = this.now;
    if (m.round !== undefined && m.round > f.round) f.round = m.round;
    if (f.snapshot) {
      // An answer to an append sent before the snapshot: the snapshot's own answers drive what comes next
      // (answering this one with another append would keep the snapshot from ever being sent again).
      f.applied = m.applied;
      return;
    }
    if (m.ok && m.want === 0 && f.awaiting && m.match < f.awaitingTo && !f.snapshot) {
      // The answer to an earlier message (a heartbeat, say) while a batch is on its way: note it and
      // keep waiting, rather than send that batch again.
      f.match = Math.max(f.match, m.match);
      f.applied = m.applied;
      this.advanceCommit();
      return;
    }
    f.awaiting = false;
    f.applied = m.applied;
    if (m.ok) {
      f.match = Math.max(f.match, m.match);
      f.next = Math.max(f.next, m.match + 1);
      this.advanceCommit();
      if (this.transferringTo === from) this.considerHandover();
    } else if (m.want === 0) {
      // A refusal: retry from the backup's hint (back over a disagreeing term, or on to its snapshot point).
      f.next = Math.min(this.log.lastIndex + 1, Math.max(1, m.hint + 1));
    }
    f.want = m.want;
    // A backup whose snapshot point is past the end of our log applied entries we do not have: only a
    // snapshot can settle it (it keeps what it applied for a merge, as the snapshot does not agree).
    const beyond = !m.ok && m.want === 0 && m.hint > this.log.lastIndex;
    f.needSnapshot = (beyond || (m.want !== 0 && m.want !== f.served)) && !f.snapshot;
    if (f.needSnapshot) {
      this.startSnapshot(from, f);
    } else if (!f.awaiting && (!m.ok || f.next <= this.log.lastIndex)) {
      this.sendAppend(from, f);
    }
  }

  private advanceCommit(): void {
    if (this.role !== 'primary') return;
    const alone = canActAlone(this.o.size, this.othersHeard()) || (this.o.size === 2 && !this.answering());
    const matches = [...this.followers.values()].map((f) => f.match);
    const next = commitIndex(this.commit, this.log.lastIndex, matches, this.o.size, (i) => this.log.position(i)?.term, this.term, alone);
    if (next > this.commit) {
      this.commit = next;
      this.applyCommitted();
      // Tell the backups now, not at the next heartbeat: their copies (which answer reads) lag less.
      for (const [r, f] of this.followers) if (!f.awaiting && !f.snapshot && !f.needSnapshot) this.sendAppend(r, f);
    }
  }

  /** Two trackers: whether the other one answered within failover-ms (else writes commit alone). */
  private answering(): boolean {
    for (const f of this.followers.values()) if (this.now - f.repliedAt < this.o.failoverMs) return true;
    return false;
  }

  /**
   * Chain of command (Raft's leadership transfer): once a higher-ranked backup holds everything committed,
   * stop taking writes, let it catch up with the rest of the log, then tell it to run at once. Writes are
   * refused (NOT_MAIN) for that moment; if the handover does not happen within failover-ms they resume.
   */
  private considerHandover(): void {
    if (this.log.position(this.commit)?.term !== this.term || this.confirmingSince !== undefined) return;
    if (this.transferringTo === undefined && this.now >= this.handoverAfter) {
      for (const [r, f] of this.followers) {
        // Not to one that still has records to merge: they go into this main's log first. Nor to one that
        // could not win (couldWin): its run would depose this main, again and again while the links stay
        // as they are (a better rank that reaches only this main).
        const peer = this.peers[r];
        // The wait for its peers (peersGathered) starts over only once it is gone or starts afresh, not each
        // time it is a write behind: under load it often is, for a moment (a review of b9cc2bc).
        if (r > this.o.rank || !this.heard(r) || peer?.fresh) {
          this.gathering.delete(r);
          continue;
        }
        if (f.snapshot || f.needSnapshot || peer?.pending !== false || !this.couldWin(r) || f.match < this.commit) continue;
        const peers = this.peersGathered(r);
        if (peers === undefined) continue;
        this.gathering.delete(r);
        this.o.note?.('info', { to: r, term: this.term }, `rank ${r} outranks this main and holds every committed write${peers}: handing command over`);
        this.transferringTo = r;
        this.transferUntil = this.now + this.o.failoverMs;
        this.transferSent = false;
        break;
      }
    }
    const r = this.transferringTo;
    const f = r === undefined ? undefined : this.followers.get(r);
    if (r === undefined || !f || this.transferSent || f.match !== this.log.lastIndex) return;
    this.transferSent = true;
    this.o.send(r, { t: 'timeout-now', term: this.term });
  }

  /**
   * Whether rank `r`, otherwise ready to take command back, has its share of the peers' sessions
   * (RaftNodeOptions.peerSessions): what the handover's note says of them if so, '' when nobody counts, and
   * undefined while it is still waited for.
   */
  private peersGathered(r: number): string | undefined {
    const own = this.o.peerSessions?.();
    const theirs = this.peers[r]?.peers;
    if (own === undefined || theirs === undefined) return '';
    const allowed = Math.max(this.o.takebackStragglers ?? DEFAULTS.takebackStragglers, Math.floor(own * TAKEBACK_STRAGGLER_SHARE));
    const said = ` and has sessions from ${theirs} peers (this main ${own})`;
    const waitMs = this.o.takebackWaitMs ?? DEFAULTS.takebackWaitMs;
    if (own - theirs <= allowed || waitMs <= 0) return said;
    const since = this.gathering.get(r);
    if (since === undefined) {
      this.gathering.set(r, this.now);
      this.o.note?.('info', { to: r, peers: theirs, own, waitMs }, `rank ${r} outranks this main and holds every committed write, but has sessions from ${theirs} of this main's ${own} peers: command goes back once it lacks at most ${allowed}, or in ${waitMs} ms`);
      return undefined;
    }
    return this.now - since >= waitMs ? `${said}, waited for ${Math.round(this.now - since)} ms` : undefined;
  }

  /**
   * Whether rank `r` could win an election now, as far as the trackers' last status messages tell: a
   * majority, itself counted, hears it and is heard by it (a vote needs both ways). A tracker whose
   * status said nothing of whom it hears (release 0.1) is taken to hear every tracker.
   */
  private couldWin(r: number): boolean {
    const hears = (a: number, b: number): boolean => {
      if (a === b) return true;
      if (a === this.o.rank) return this.heard(b);
      const said = this.peers[a]?.hears;
      return said === undefined || said.has(b);
    };
    let voters = 0;
    for (let t = 0; t < this.o.size; t++) if (hears(t, r) && hears(r, t)) voters++;
    return voters >= majority(this.o.size);
  }

  private startSnapshot(r: number, f: Follower): void {
    // The state as applied here; a backup ahead of it keeps its own records for a merge (onSnapshot).
    const pos = this.log.position(this.state.appliedIndex);
    if (!pos) return;
    // The records are taken at once (the state at `pos`, the holder lists by reference); each part is made
    // and serialized as it is sent, so no turn of the loop builds or serializes the whole state (0.5 s of
    // 0.9 at 1,000 peers serializing, 0.7 s at 5,000 building the records).
    const records = this.state.snapshot(pos.epoch);
    // Whether the backup's applied entries are ours too; if not (or unknown), it keeps them for a merge.
    const agrees = f.applied !== undefined && f.applied.index <= pos.index && this.log.matches(f.applied);
    f.snapshot = { id: ++this.snapshotIds, records, at: 0, part: 0, current: '', head: pos, agrees };
    f.snapshot.current = this.serializePart(f.snapshot);
    f.served = f.want;
    f.needSnapshot = false;
    this.o.note?.('info', { to: r, index: pos.index }, `sending rank ${r} a snapshot at index ${pos.index}`);
    this.sendSnapshotPart(r, f);
  }

  /** The snapshot's records from `at` on, up to MAX_BATCH_BYTES of them (at least one), as the next part. */
  private serializePart(s: NonNullable<Follower['snapshot']>): string {
    let part = '';
    for (; s.at < s.records.length; s.at++) {
      const line = JSON.stringify(s.records.at(s.at)) + '\n';
      if (part.length > 0 && part.length + line.length > MAX_BATCH_BYTES) break;
      part += line;
    }
    return part;
  }

  private sendSnapshotPart(r: number, f: Follower): void {
    const s = f.snapshot!;
    f.sentAt = this.now;
    f.awaiting = true;
    this.o.send(r, { t: 'snapshot', term: this.term, id: s.id, part: s.part, done: s.at === s.records.length, records: s.current, agrees: s.agrees, want: f.served });
  }

  private onSnapshotReply(from: number, m: Extract<RaftMessage, { t: 'snapshot-reply' }>): void {
    const f = this.followers.get(from);
    if (this.role !== 'primary' || m.term !== this.term || !f?.snapshot || f.snapshot.id !== m.id || m.part !== f.snapshot.part) return;
    f.awaiting = false;
    f.repliedAt = this.now;
    if (!m.ok) {
      f.snapshot = undefined;
      f.needSnapshot = true;
      f.served = 0;
      return;
    }
    if (f.snapshot.at < f.snapshot.records.length) {
      f.snapshot.part++;
      f.snapshot.current = this.serializePart(f.snapshot);
      this.sendSnapshotPart(from, f);
      return;
    }
    f.match = Math.max(f.match, m.match);
    f.next = f.match + 1;
    f.snapshot = undefined;
    this.advanceCommit();
    this.sendAppend(from, f);
  }

  private onMerge(from: number, m: Extract<RaftMessage, { t: 'merge' }>): void {
    if (this.role !== 'primary' || m.term !== this.term || this.transferringTo !== undefined) return;
    if (!Array.isArray(m.records) || !m.records.every(isDurableRecord)) return;
    for (const w of this.mergesWaiting.values()) if (w.from === from && w.id === m.id) return; // already under way
    const { index, term } = this.propose({ op: 'merge', records: m.records });
    if (this.state.appliedIndex >= index) this.o.send(from, { t: 'merge-reply', term: this.term, id: m.id }); // committed at once (acting alone)
    else this.mergesWaiting.set(index, { from, id: m.id, term });
    this.o.note?.('info', { from, records: m.records.length }, `merging ${m.records.length} records rank ${from} had to give up`);
  }

  /** As main: records this tracker itself had to give up go straight into the log. */
  private mergeOwnPending(): void {
    if (this.transferringTo !== undefined || this.log.position(this.commit)?.term !== this.term) return;
    if (this.mergeSent && [...this.mergesWaiting.values()].some((w) => w.from === this.o.rank)) return;
    const batch = this.pendingBatch();
    if (!batch) return;
    this.mergeSent = { id: batch.id, at: this.now };
    const { index, term } = this.propose({ op: 'merge', records: batch.records });
    if (this.state.appliedIndex >= index) return; // committed at once (acting alone)
    this.mergesWaiting.set(index, { from: this.o.rank, id: batch.id, term });
  }

  // --- the backup -----------------------------------------------------------------------------------

  private onAppend(from: number, m: Extract<RaftMessage, { t: 'append' }>): void {
    // A tracker that restarted lost its holder lists: it takes entries, and asks for a snapshot too.
    const reply = (ok: boolean, match: number, hint: number): void =>
      this.o.send(from, { t: 'append-reply', term: this.term, ok, match, hint, want: this.want, applied: this.appliedPosition(), round: m.round });
    if (m.term < this.term) return reply(false, 0, this.log.lastIndex);
    // A main streams a snapshot with nothing else in between, so an append from any other main (or term)
    // means the one under way will never finish: drop it, or it kept this tracker syncing for good.
    if (this.incoming && (this.incoming.from !== from || this.incoming.term !== m.term)) this.abandonSnapshot();
    this.followMain(from);
    if (this.mustInstall) return reply(false, 0, this.log.lastIndex);
    const prev = m.prev;
    if (prev.index < this.log.start.index) {
      // The main starts before our snapshot point: ask it to go on from there.
      return reply(false, 0, this.log.start.index);
    }
    if (!this.log.matches(prev)) {
      if (prev.index <= this.state.appliedIndex) return this.giveUpState(`the main's log disagrees at index ${prev.index}, which this tracker applied`, reply);
      const hint = Math.min(this.log.lastIndex, prev.index - 1);
      return reply(false, 0, this.conflictHint(hint));
    }
    let i = 0;
    for (; i < m.entries.length; i++) {
      const e = m.entries[i]!;
      const mine = this.log.position(e.index);
      if (!mine) break;
      if (mine.term !== e.term || mine.epoch !== e.epoch) {
        if (e.index <= this.state.appliedIndex) return this.giveUpState(`the main's entry ${e.index} differs from the one this tracker applied`, reply);
        this.log.truncateAfter(e.index - 1);
        break;
      }
    }
    const fresh = m.entries.slice(i);
    // Refuse a malformed entry before storing anything; what is decoded here is what gets applied.
    for (const e of fresh) this.decoded.set(e, decodeOp(e.op));
    this.log.append(fresh);
    const lastNew = prev.index + m.entries.length;
    if (m.commit > this.commit) {
      this.commit = Math.min(m.commit, lastNew);
      this.applyCommitted();
    }
    reply(true, lastNew, lastNew);
  }

  /** Index to retry from: skip back over the whole term that disagrees. */
  private conflictHint(from: number): number {
    const term = this.log.position(from)?.term;
    let i = from;
    while (i > this.log.start.index && i > this.state.appliedIndex && this.log.position(i - 1)?.term === term) i--;
    return i - 1;
  }

  private followMain(from: number): void {
    this.mainHeardAt = this.now;
    // A run that a live main outlasted is over (a pre-vote round it lost while it missed heartbeats).
    this.runningSince = undefined;
    this.preVotes.clear();
    this.electionAt = this.now + this.electionDelay();
    if (this.role === 'candidate' || this.role === 'primary') this.becomeFollower(this.term, from, `rank ${from} is main in term ${this.term}`);
    if (this.handedTo !== undefined) {
      // Some main leads: if it is the one command was handed to, handovers work again.
      if (this.handedTo === from) this.failedHandovers = 0;
      this.handedTo = undefined;
    }
    if (this.leader !== from) {
      this.leader = from;
      this.o.note?.('info', { main: from, term: this.term }, `following rank ${from} in term ${this.term}`);
      this.o.onFollow?.(from);
    }
    this.settle();
  }

  /**
   * The main's log disagrees with entries this tracker applied: keep every durable record for a merge,
   * then copy the main's snapshot. Nothing acknowledged here is lost.
   */
  private giveUpState(why: string, reply: (ok: boolean, match: number, hint: number) => void): void {
    if (!this.mustInstall) {
      this.o.note?.('warn', { why }, `${why}: keeping this tracker's durable records for a merge and copying the main's state`);
      const records = this.state.durableRecords().map((r) => JSON.stringify(r));
      this.state.store.transaction(() => this.state.store.addPending(records));
      this.mustInstall = true;
      this.want = this.newWant();
      this.settle();
    }
    reply(false, 0, this.log.lastIndex);
  }

  private onSnapshot(from: number, m: Extract<RaftMessage, { t: 'snapshot' }>): void {
    const reply = (ok: boolean, match: number): void => this.o.send(from, { t: 'snapshot-reply', term: this.term, id: m.id, part: m.part, ok, match });
    if (m.term < this.term) return reply(false, 0);
    this.followMain(from);
    const refuse = (): void => {
      this.incoming = undefined;
      this.settle();
      reply(false, 0);
    };
    if (m.part === 0) {
      this.incoming = { id: m.id, from, term: m.term, install: this.state.beginInstall(), next: 0 };
      this.settle(); // copying from the first part on (followMain above settled before it began)
    }
    const inc = this.incoming;
    if (!inc || inc.id !== m.id || inc.from !== from || inc.term !== m.term || inc.next !== m.part) return refuse();
    // Each part is installed as it comes (into a table of its own, nothing here changes until the last),
    // so no one turn registers every holder list.
    try {
      const records: SnapshotRecord[] = [];
      for (const line of m.records.split('\n')) if (line) records.push(JSON.parse(line) as SnapshotRecord);
      inc.install.add(records);
    } catch {
      return refuse();
    }
    inc.next++;
    if (!m.done) return reply(true, 0);
    const head = inc.install.head;
    if (head === undefined) return refuse();
    this.incoming = undefined;
    const pos: LogPosition = { index: head.index, term: head.term, epoch: head.epoch };
    // Installing would drop applied writes the main lacks: keep them for a merge first.
    if (!m.agrees && !this.mustInstall && this.state.stateful) {
      this.o.note?.('warn', { main: from }, 'the main\'s snapshot may lack writes this tracker applied: keeping its durable records for a merge');
      const records = this.state.durableRecords().map((r) => JSON.stringify(r));
      this.state.store.transaction(() => this.state.store.addPending(records));
    }
    // When it gave up its state, or the main's log lacks what it applied, the commit index it had counted
    // entries of its own history: keeping it applied them again over the copy, the main's next entries
    // then disagreed with entries "applied", and the state was given up again, for ever (simulation seed
    // 8027114: a main whose --data was wiped, two backups looping every 5 ms). From the copy's point on,
    // only the main's commit index counts. The entries after that point stay (Raft's rule when the log
    // agrees there): those that are the main's may count in its majorities already, and any of its own
    // are above what is applied now, so the main's next append truncates them instead.
    const ownHistory = this.mustInstall || !m.agrees;
    this.log.resetTo(pos);
    inc.install.finish();
    this.commit = ownHistory ? head.index : Math.max(head.index, Math.min(this.commit, this.log.lastIndex));
    this.mustInstall = false;
    this.want = 0;
    this.o.note?.('info', { main: from, index: head.index }, `copied the main's state at index ${head.index}`);
    this.applyCommitted();
    reply(true, head.index);
  }

  private abandonSnapshot(): void {
    const inc = this.incoming!;
    this.incoming = undefined;
    this.o.note?.('info', { from: inc.from, parts: inc.next }, `dropping the snapshot rank ${inc.from} was sending in term ${inc.term} (${inc.next} parts in): it will not finish`);
  }

  private pendingBatch(): { id: number; records: DurableRecord[] } | undefined {
    if (!this.state.store.hasPending()) return undefined;
    const rows = this.state.store.pending(10_000);
    if (rows.length === 0) return undefined;
    const records: DurableRecord[] = [];
    let bytes = 0;
    let id = 0;
    for (const row of rows) {
      if (records.length > 0 && bytes + row.record.length > MAX_BATCH_BYTES) break;
      bytes += row.record.length;
      records.push(JSON.parse(row.record) as DurableRecord);
      id = row.id;
    }
    return { id, records };
  }

  /** As a backup in sync: hands pending records to the main, one batch at a time. */
  private sendMerge(): void {
    if (this.role !== 'backup' || this.leader === undefined || !this.mainAlive()) return;
    if (this.mergeSent && this.now - this.mergeSent.at < this.o.failoverMs) return;
    const batch = this.pendingBatch();
    if (!batch) return;
    this.mergeSent = { id: batch.id, at: this.now };
    this.o.note?.('info', { main: this.leader, records: batch.records.length, id: batch.id }, `handing ${batch.records.length} records to the main for a merge`);
    this.o.send(this.leader, { t: 'merge', term: this.term, id: batch.id, records: batch.records });
  }

  private onMergeReply(m: Extract<RaftMessage, { t: 'merge-reply' }>): void {
    if (this.mergeSent?.id !== m.id) return;
    this.o.note?.('info', { id: m.id }, 'the main committed the records handed to it');
    this.state.store.clearPending(m.id);
    this.mergeSent = undefined;
    this.sendMerge();
  }

  // --- both -----------------------------------------------------------------------------------------

  private applyCommitted(): void {
    if (this.mustInstall) return;
    while (this.state.appliedIndex < this.commit) {
      const e = this.log.entry(this.state.appliedIndex + 1);
      if (!e) break;
      const op = this.decoded.get(e) ?? decodeOp(e.op);
      this.decoded.delete(e);
      this.state.apply({ index: e.index, term: e.term, op });
      this.o.onApplied?.(e.index, e.term, op);
      // A main that kept its holder lists took over while this tracker's are lost: ask for a copy.
      if (op.op === 'term' && !op.resetHolders && this.state.holdersLost && this.role !== 'primary') this.want = this.newWant();
      const waiting = this.mergesWaiting.get(e.index);
      if (waiting) this.mergesWaiting.delete(e.index);
      if (waiting?.term === e.term) {
        if (waiting.from === this.o.rank) {
          this.state.store.clearPending(waiting.id);
          this.mergeSent = undefined;
        } else if (this.role === 'primary') {
          this.o.send(waiting.from, { t: 'merge-reply', term: this.term, id: waiting.id });
        }
      }
    }
    // A main that had lost its holder lists too had every tracker drop theirs: no snapshot needed.
    if (this.want !== 0 && !this.mustInstall && !this.state.holdersLost) this.want = 0;
    // Keep the log bounded: fold applied entries into the snapshot point, keeping some for laggards.
    const keep = this.o.keepEntries ?? KEEP_ENTRIES;
    let upTo = this.state.appliedIndex - keep;
    // Not past a snapshot on its way to a backup that answers: it goes on from the entry after the header.
    for (const [r, f] of this.followers) if (f.snapshot && this.heard(r)) upTo = Math.min(upTo, f.snapshot.head.index - keep);
    if (upTo > this.log.start.index + keep) this.log.compact(this.log.position(upTo)!);
    this.settle();
  }

  private newWant(): number {
    return 1 + Math.floor(this.o.random() * 0x7fff_ffff);
  }

  /** The last entry applied: index, term and epoch. */
  appliedPosition(): LogPosition {
    return this.log.position(this.state.appliedIndex) ?? { index: this.state.appliedIndex, term: this.state.appliedTerm, epoch: -1 };
  }

  private status(): RaftMessage {
    return { t: 'status', term: this.term, role: this.role, last: this.log.last, applied: this.state.appliedIndex, fresh: this.fresh, leader: this.leader ?? -1, pending: this.hasPendingMerge, hears: this.ranksHeard(), peers: this.o.peerSessions?.() };
  }
}

/** A write sent to a tracker that is not (or no longer) the main. */
export class NotMainError extends Error {
  constructor(readonly main: number | undefined) {
    super(main === undefined ? 'this tracker is not the main; a takeover is under way' : `this tracker is not the main; rank ${main} is`);
  }
}
