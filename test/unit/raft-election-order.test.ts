/**
 * The next tracker in rank takes over from a dead main directly, even when the rank after it starts its
 * own election at nearly the same moment (issue 12). Terms are striped by rank, so if both backups run,
 * the worse-ranked one runs in the higher term; before this rule it won, and the better one took command
 * from it a moment later: two changes of main, and every peer failing over twice. Three real RaftNodes on
 * a virtual clock (1 ms ticks) and an in-memory network with a latency per link.
 */
import t, { type Test } from 'tap';
import { VirtualCluster } from '../helpers/raft.js';

const HEARTBEAT_MS = 50;
const FAILOVER_MS = 250;
/** The rank step of electionDelay: half a heartbeat. */
const STEP_MS = HEARTBEAT_MS / 2;
const LINK_MS = 5;

function started(t: Test): VirtualCluster {
  const trio = new VirtualCluster({ size: 3, heartbeatMs: HEARTBEAT_MS, failoverMs: FAILOVER_MS, linkMs: LINK_MS });
  t.ok(trio.settled(), 'rank 0 is main once the three have met');
  return trio;
}

/** Kills the main and checks that rank 1, and only rank 1, became main after it. */
function killMainExpectRank1(t: Test, trio: VirtualCluster): void {
  const mark = trio.changes.length;
  trio.dead.add(0);
  trio.run(8 * FAILOVER_MS, () => trio.main() !== undefined);
  t.equal(trio.main(), 1, 'the next in rank is main');
  trio.run(4 * FAILOVER_MS);
  t.equal(trio.main(), 1, 'and stays main');
  t.same(trio.mainsSince(mark), [`1 primary ${trio.nodes[1]!.term}`], 'no other tracker was main after the kill');
}

// The main's last heartbeat reaches rank 1 later than rank 2 by `lag` ms, so that rank 1's election falls
// due `skew` ms before rank 2's (rank 2 waits one rank step longer): skew = STEP_MS - lag.
for (const skew of [0, 2, 4, 8]) {
  t.test(`the main dies and both backups fall due ${skew} ms apart: rank 1 takes over, once`, (t) => {
    const trio = started(t);
    trio.extra.set('0>1', STEP_MS - skew);
    trio.run(3 * HEARTBEAT_MS); // heartbeats now arrive with that lag
    killMainExpectRank1(t, trio);
    t.end();
  });
}

// As in a real tracker, each ticks every 12 ms (a 50 ms heartbeat / 4), rank 1 just after rank 2: rank 2's
// ask can come while rank 1's own election is due but not yet run. Rank 1 then runs on that ask.
for (const lag of [STEP_MS - 2, STEP_MS, STEP_MS + 4]) {
  t.test(`ticks every 12 ms, rank 1 ticking 6 ms after rank 2, the main's last heartbeat ${lag} ms later at rank 1: rank 1 takes over, once`, (t) => {
    const trio = started(t);
    trio.tickMs = 12;
    trio.phase[1] = 6;
    trio.extra.set('0>1', lag);
    trio.run(3 * HEARTBEAT_MS);
    killMainExpectRank1(t, trio);
    t.end();
  });
}

for (const lag of [STEP_MS - 2, STEP_MS, STEP_MS + 4]) {
  t.test(`a backup that lost a pre-vote round while the main lived still runs first when the main dies (ticks every 12 ms, lag ${lag} ms)`, (t) => {
    const trio = started(t);
    trio.tickMs = 12;
    trio.phase[1] = 6;
    // Rank 1 misses the main's heartbeats for a while (an overloaded main): it runs, and is refused.
    trio.extra.set('0>1', Infinity);
    trio.run(2 * FAILOVER_MS);
    t.equal(trio.main(), 0, 'the main stays main: the others still hear it');
    trio.extra.set('0>1', lag);
    trio.run(4 * HEARTBEAT_MS);
    t.equal(trio.nodes[1]!.leader, 0, 'rank 1 follows the main again');
    killMainExpectRank1(t, trio);
    t.end();
  });
}

// The main's last heartbeat reaches rank 2 `lag` ms after rank 1 (its messages to its backups go out at
// different moments): rank 1 falls due first, and rank 2, which still hears the main, refuses its
// pre-vote. Rank 1 asks again at its next tick, and is main about a failover period after rank 2 last
// heard the main. Before, it waited a whole election delay: with a lag past its running window, rank 2 fell
// due meanwhile and won (then handed command to rank 1: two changes of main); with less, the first main
// came only about two failover periods after the kill.
for (const lag of [10, 30, 45]) {
  t.test(`the main's last heartbeat reaches rank 2 ${lag} ms after rank 1: rank 1 takes over, once, within a failover period and a heartbeat (asking again when refused)`, (t) => {
    const trio = started(t);
    trio.tickMs = 12;
    trio.extra.set('0>2', lag);
    trio.run(3 * HEARTBEAT_MS);
    const killedAt = trio.now;
    killMainExpectRank1(t, trio);
    const firstMainAt = trio.firstMainAfter(killedAt);
    t.ok(firstMainAt !== undefined && firstMainAt - killedAt <= FAILOVER_MS + HEARTBEAT_MS, `rank 1 was main ${firstMainAt === undefined ? 'never' : firstMainAt - killedAt} ms after the kill`);
    const asks = trio.preVoteAsks.filter((a) => a.from === 1 && a.to === 2 && a.at >= killedAt).length;
    if (lag >= 30) t.ok(asks >= 2, `rank 2 refused rank 1's first ask (it still heard the main), and rank 1 asked again: ${asks} asks`);
    t.end();
  });
}

t.test('with the main and rank 1 both frozen there is no main, and rank 1 leads once it thaws', (t) => {
  const trio = started(t);
  trio.dead.add(0);
  trio.dead.add(1);
  trio.run(4 * FAILOVER_MS);
  t.equal(trio.main(), undefined, 'one of three cannot be main alone');
  trio.dead.delete(1); // it was frozen: it comes back with its log, and notices the pause
  trio.run(6 * FAILOVER_MS, () => trio.main() !== undefined);
  t.equal(trio.main(), 1, 'once rank 1 is back, it is main (it outranks rank 2 and its log is as up to date)');
  t.same(trio.changes.filter((c) => c.startsWith('2 primary')), [], 'rank 2 never led');
  t.end();
});

t.test('a worse-ranked backup whose log is ahead still wins: the better one does not hold it back', (t) => {
  const trio = started(t);
  // Rank 1 stops hearing the main; a write then reaches only rank 2 (a majority with the main).
  trio.extra.set('0>1', Infinity);
  trio.nodes[0]!.propose({ op: 'blacklist-add', entry: { target: '10.0.0.1', reason: 'test', since: 1, addedBy: 'test' } });
  trio.run(3 * HEARTBEAT_MS, () => trio.nodes[2]!.log.lastIndex === trio.nodes[0]!.log.lastIndex);
  t.ok(trio.nodes[2]!.log.lastIndex > trio.nodes[1]!.log.lastIndex, 'rank 2 holds a write rank 1 does not');
  trio.dead.add(0);
  trio.run(8 * FAILOVER_MS, () => trio.main() !== undefined);
  t.equal(trio.main(), 2, 'rank 2, the only one that can win, is main');
  t.end();
});
