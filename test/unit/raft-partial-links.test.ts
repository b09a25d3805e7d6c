/**
 * Elections when trackers reach each other only in part (issue 12). A tracker that is running refuses its
 * pre-vote to a worse-ranked one for a short window (RaftNode.runsBefore), so that the next in rank takes
 * over directly. With links cut, the better-ranked one may be unable to win at all: the window must then
 * not keep the one tracker that can win from winning. Five real RaftNodes on a virtual clock (1 ms ticks)
 * and an in-memory network whose links can be cut; several seeds for the election timers' jitter.
 */
import t, { type Test } from 'tap';
import type { RaftNode } from '../../daemon/raft/node.js';
import type { RaftMessage } from '../../daemon/raft/messages.js';
import { memoryRaftNode, seededStream } from '../helpers/raft.js';

const HEARTBEAT_MS = 50;
const FAILOVER_MS = 250;
const LINK_MS = 5;
const SIZE = 5;

class Cluster {
  now = 0;
  readonly nodes: RaftNode[] = [];
  readonly dead = new Set<number>();
  /** Links cut both ways, as `a-b` with a < b. */
  readonly cut = new Set<string>();
  /** Links that lose what one side sends, as `from>to`. */
  readonly oneWay = new Set<string>();
  /** Ranks whose status says nothing of whom they hear, as a release 0.1 tracker's does. */
  readonly legacy = new Set<number>();
  private queue: Array<{ to: number; from: number; m: RaftMessage; at: number }> = [];

  constructor(seed: number) {
    const random = seededStream(seed);
    for (let rank = 0; rank < SIZE; rank++) {
      this.nodes.push(
        memoryRaftNode({
          rank,
          size: SIZE,
          heartbeatMs: HEARTBEAT_MS,
          failoverMs: FAILOVER_MS,
          random,
          send: (to, m) => {
            if (this.dead.has(rank) || this.isCut(rank, to) || this.oneWay.has(`${rank}>${to}`)) return;
            const sent = m.t === 'status' && this.legacy.has(rank) ? { ...m, hears: undefined } : m;
            this.queue.push({ to, from: rank, m: sent, at: this.now + LINK_MS });
          },
        }),
      );
    }
  }

  isCut(a: number, b: number): boolean {
    return this.cut.has(a < b ? `${a}-${b}` : `${b}-${a}`);
  }

  /** Milliseconds run with no main, and how many times a main lost command (since the counters were reset). */
  noMainMs = 0;
  deposed = 0;
  private lastMain: number | undefined;

  run(ms: number, until?: () => boolean): void {
    const end = this.now + ms;
    while (this.now < end) {
      this.now += 1;
      for (const [rank, n] of this.nodes.entries()) if (!this.dead.has(rank)) n.tick(this.now);
      const due = this.queue.filter((q) => q.at <= this.now);
      this.queue = this.queue.filter((q) => q.at > this.now);
      for (const { to, from, m } of due) if (!this.dead.has(to) && !this.isCut(from, to)) this.nodes[to]!.receive(this.now, from, m);
      const main = this.main();
      if (main === undefined) this.noMainMs++;
      if (this.lastMain !== undefined && main !== this.lastMain) this.deposed++;
      this.lastMain = main;
      if (until?.()) return;
    }
  }

  resetCounters(): void {
    this.noMainMs = 0;
    this.deposed = 0;
  }

  /** The one live main, if there is exactly one. */
  main(): number | undefined {
    const mains = this.nodes.flatMap((n, rank) => (n.isPrimary && !this.dead.has(rank) ? [rank] : []));
    return mains.length === 1 ? mains[0] : undefined;
  }

  /** Runs until `rank` is the one main and every live tracker that reaches it follows it; returns the ms it took. */
  settle(t: Test, rank: number, withinMs: number, what: string): number {
    const from = this.now;
    const followers = this.nodes.flatMap((n, r) => (r !== rank && !this.dead.has(r) && !this.isCut(r, rank) ? [n] : []));
    this.run(withinMs, () => this.main() === rank && followers.every((n) => n.leader === rank));
    const took = this.now - from;
    t.equal(this.main(), rank, `${what}: tracker ${rank} is main after ${took} ms`);
    t.ok(
      followers.every((n) => n.leader === rank),
      'and every tracker that reaches it follows it',
    );
    return took;
  }
}

const SEEDS = [1, 2, 3, 4, 5, 6, 7, 8];

t.test('only rank 2 can win (ranks 3 and 4 dead, 0 and 1 cannot reach each other): it wins, though both better ranks keep running', (t) => {
  for (const seed of SEEDS) {
    const c = new Cluster(seed);
    c.settle(t, 0, 20 * FAILOVER_MS, `seed ${seed}, all five meet`);
    c.dead.add(3);
    c.dead.add(4);
    c.cut.add('0-1');
    // Ranks 0 and 1 each reach only rank 2 and themselves: two of five. Only rank 2 reaches three.
    c.settle(t, 2, 40 * FAILOVER_MS, `seed ${seed}, after the cut`);
    c.resetCounters();
    c.run(20 * FAILOVER_MS);
    t.equal(c.deposed, 0, 'and stays main: it hands command to no better rank that could not win');
    c.cut.delete('0-1');
    c.settle(t, 0, 40 * FAILOVER_MS, `seed ${seed}, the link healed: command goes back to rank 0`);
  }
  t.end();
});

t.test('rank 0 reaches rank 1 only: rank 1 leads; when rank 1 dies, rank 2 takes over although rank 0 keeps running', (t) => {
  for (const seed of SEEDS) {
    const c = new Cluster(seed);
    for (const other of [2, 3, 4]) c.cut.add(`0-${other}`);
    c.settle(t, 1, 40 * FAILOVER_MS, `seed ${seed}, rank 0 cut off from 2, 3 and 4`);
    c.dead.add(1);
    c.settle(t, 2, 40 * FAILOVER_MS, `seed ${seed}, rank 1 dead`);
  }
  t.end();
});

t.test('the main is cut off from all but one backup: the other three elect the best of them, and the old main steps down', (t) => {
  for (const seed of SEEDS) {
    const c = new Cluster(seed);
    c.settle(t, 0, 20 * FAILOVER_MS, `seed ${seed}, all five meet`);
    for (const other of [2, 3, 4]) c.cut.add(`0-${other}`);
    // 1, 2, 3, 4 reach each other; rank 1 still hears rank 0 (and may keep following it), 2-4 do not.
    c.run(40 * FAILOVER_MS, () => c.main() !== undefined && c.main() !== 0 && !c.nodes[0]!.isPrimary);
    const main = c.main();
    t.ok(main !== undefined && main !== 0, `seed ${seed}: a main other than rank 0 (${main})`);
    t.notOk(c.nodes[0]!.isPrimary, 'rank 0, without a majority, is main no more');
  }
  t.end();
});

/**
 * Ranks 3 and 4 dead, and what rank 0 sends rank 1 lost: rank 0 hears a majority (1, 2 and itself) but
 * cannot win. Runs until rank 2 leads, then measures a window of 80 failover periods after a settling one.
 */
function oneWayLink(t: Test, seed: number, legacy: boolean): Cluster {
  const c = new Cluster(seed);
  if (legacy) for (const rank of [0, 1]) c.legacy.add(rank);
  c.settle(t, 0, 20 * FAILOVER_MS, `seed ${seed}, all five meet`);
  c.dead.add(3);
  c.dead.add(4);
  c.oneWay.add('0>1');
  c.run(80 * FAILOVER_MS, () => c.main() === 2);
  t.equal(c.main(), 2, `seed ${seed}: rank 2, the one tracker that can win, is main`);
  c.run(80 * FAILOVER_MS);
  c.resetCounters();
  c.run(80 * FAILOVER_MS);
  t.comment(`seed ${seed}: a main ${Math.round(100 - (100 * c.noMainMs) / (80 * FAILOVER_MS))}% of the time, command changed ${c.deposed} times in ${80 * FAILOVER_MS} ms`);
  return c;
}

t.test('a link that loses what one side sends: the main hands command to no better rank that cannot be heard back', (t) => {
  for (const seed of SEEDS) {
    const c = oneWayLink(t, seed, false);
    t.same([c.noMainMs, c.deposed], [0, 0], 'a main all the time, and the same one');
  }
  t.end();
});

t.test('when the better rank does not say whom it hears (a 0.1 tracker), each failed handover makes the next wait twice as long', (t) => {
  for (const seed of SEEDS) {
    const c = oneWayLink(t, seed, true);
    t.ok(c.noMainMs < 16 * FAILOVER_MS, `a main at least 80% of the time (no main for ${c.noMainMs} ms)`);
    t.ok(c.deposed <= 4, `command changed at most 4 times (${c.deposed})`);
  }
  t.end();
});
