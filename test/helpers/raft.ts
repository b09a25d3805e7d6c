/**
 * RaftNodes for tests that run a cluster on a virtual clock: each with its own in-memory state and
 * store, and one seeded random stream for all (the same schedule on every run).
 */
import type { RaftMessage } from '../../daemon/raft/messages.js';
import { RaftNode, type RaftNodeOptions } from '../../daemon/raft/node.js';
import { TrackerState } from '../../daemon/state.js';
import { Store } from '../../daemon/store.js';

/** A linear congruential stream in [0, 1): the same numbers for the same seed. */
export function seededStream(seed: number): () => number {
  let x = seed;
  return () => (x = (x * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
}

/** A tracker's cluster logic with an in-memory store, starting at virtual time 0. */
export function memoryRaftNode(o: Omit<RaftNodeOptions, 'state' | 'now'>, state = new TrackerState(new Store(':memory:'))): RaftNode {
  return new RaftNode({ ...o, state, now: 0 });
}

export interface VirtualClusterOptions {
  size: number;
  heartbeatMs: number;
  failoverMs: number;
  /** Each message's latency, every link (extra per link: VirtualCluster.extra). */
  linkMs: number;
  seed?: number;
  /**
   * The peers with a session at each rank (RaftNodeOptions.peerSessions), read at each status: change it
   * as the run goes. Absent: the nodes count no sessions (command goes back at once, as before).
   */
  sessions?: number[];
  takebackWaitMs?: number;
  takebackStragglers?: number;
}

/**
 * `size` real RaftNodes on a virtual clock (1 ms steps) and an in-memory network with a latency per
 * link. A tracker in `dead` neither ticks, sends nor receives (kill -9, or a freeze while it stays there).
 */
export class VirtualCluster {
  now = 0;
  readonly nodes: RaftNode[] = [];
  /** Each tracker's state (what it applied). */
  readonly states: TrackerState[] = [];
  readonly dead = new Set<number>();
  /** Frozen (SIGSTOP, a stalled machine): no ticks; what is sent to it waits, and arrives once it runs again. */
  readonly paused = new Set<number>();
  /** Extra latency on one directed link, `${from}>${to}` (Infinity: nothing gets through). */
  readonly extra = new Map<string, number>();
  /** Each tracker ticks every `tickMs`, at its own offset `phase[rank]` (cluster.ts ticks every heartbeat / 4). */
  tickMs = 1;
  readonly phase: number[];
  /** Every change of role, in order: `rank role term`. */
  readonly changes: string[] = [];
  /** When each change of `changes` happened (virtual ms). */
  readonly changedAt: number[] = [];
  /** Every pre-vote ask sent. */
  readonly preVoteAsks: Array<{ from: number; to: number; at: number }> = [];
  /** Every message sent: its kind, and when. */
  readonly sent: Array<{ from: number; to: number; t: RaftMessage['t']; at: number }> = [];
  private queue: Array<{ to: number; from: number; m: RaftMessage; at: number }> = [];

  constructor(readonly o: VirtualClusterOptions) {
    const random = seededStream(o.seed ?? 1);
    this.phase = new Array<number>(o.size).fill(0);
    for (let rank = 0; rank < o.size; rank++) {
      const state = new TrackerState(new Store(':memory:'));
      this.states.push(state);
      const node: RaftNode = memoryRaftNode({
        rank,
        size: o.size,
        heartbeatMs: o.heartbeatMs,
        failoverMs: o.failoverMs,
        random,
        peerSessions: o.sessions && (() => o.sessions![rank]!),
        takebackWaitMs: o.takebackWaitMs,
        takebackStragglers: o.takebackStragglers,
        send: (to, m) => {
          if (this.dead.has(rank)) return;
          if (m.t === 'vote' && m.pre) this.preVoteAsks.push({ from: rank, to, at: this.now });
          this.sent.push({ from: rank, to, t: m.t, at: this.now });
          this.queue.push({ to, from: rank, m, at: this.now + o.linkMs + (this.extra.get(`${rank}>${to}`) ?? 0) });
        },
        onRoleChange: (_from, to) => {
          this.changes.push(`${rank} ${to} ${node.term}`);
          this.changedAt.push(this.now);
        },
      }, state);
      this.nodes.push(node);
    }
  }

  run(ms: number, until?: () => boolean): void {
    const end = this.now + ms;
    while (this.now < end) {
      this.now += 1;
      const runs = (rank: number): boolean => !this.dead.has(rank) && !this.paused.has(rank);
      for (const [rank, n] of this.nodes.entries()) if (runs(rank) && (this.now - this.phase[rank]!) % this.tickMs === 0) n.tick(this.now);
      const due = this.queue.filter((q) => q.at <= this.now && !this.paused.has(q.to));
      this.queue = this.queue.filter((q) => q.at > this.now || this.paused.has(q.to));
      for (const { to, from, m } of due) if (!this.dead.has(to)) this.nodes[to]!.receive(this.now, from, m);
      if (until?.()) return;
    }
  }

  /** The one live main, if exactly one tracker acts as main. */
  main(): number | undefined {
    const mains = this.nodes.flatMap((n, rank) => (n.isPrimary && !this.dead.has(rank) ? [rank] : []));
    return mains.length === 1 ? mains[0] : undefined;
  }

  /** When the first tracker became main at or after `at`. */
  firstMainAfter(at: number): number | undefined {
    const i = this.changes.findIndex((c, k) => this.changedAt[k]! >= at && c.includes(' primary '));
    return i < 0 ? undefined : this.changedAt[i];
  }

  mainsSince(mark: number): string[] {
    return this.changes.slice(mark).filter((c) => c.includes(' primary '));
  }

  /** Runs until rank 0 is main and every other tracker its backup. */
  settled(ms = 5_000): boolean {
    this.run(ms, () => this.main() === 0 && this.nodes.slice(1).every((n) => n.role === 'backup'));
    return this.main() === 0;
  }
}
