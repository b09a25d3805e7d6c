/**
 * A main whose process is gone (kill -9, a crash) refuses the backups' connections: the backups run once
 * it has missed two heartbeats instead of after failover-ms of silence (RaftNode.peerGone; cluster.ts
 * reports a refused dial of a tracker with no link open to us). Told wrongly of a main that lives,
 * nothing changes hands: its heartbeats still arrive in time. Real RaftNodes on a virtual clock, ticking
 * every 12 ms as a tracker does at a 50 ms heartbeat.
 */
import t, { type Test } from 'tap';
import { VirtualCluster } from '../helpers/raft.js';

const HEARTBEAT_MS = 50;
const FAILOVER_MS = 250;
const LINK_MS = 5;
const TICK_MS = 12;

function started(t: Test, size: number): VirtualCluster {
  const c = new VirtualCluster({ size, heartbeatMs: HEARTBEAT_MS, failoverMs: FAILOVER_MS, linkMs: LINK_MS });
  c.tickMs = TICK_MS;
  t.ok(c.settled(), `rank 0 is main once the ${size} have met`);
  c.run(3 * HEARTBEAT_MS);
  return c;
}

/** Kills the main, and tells each rank in `told` that it is gone `afterMs[i]` ms later. */
function killAndTell(c: VirtualCluster, told: number[], afterMs: number[]): number {
  const killedAt = c.now;
  c.dead.add(0);
  told.forEach((rank, i) => {
    c.run(afterMs[i]! - (c.now - killedAt));
    c.nodes[rank]!.peerGone(c.now, 0);
  });
  return killedAt;
}

t.test('three trackers, the main killed and both backups refused by it: rank 1 is main within a few ticks, once', (t) => {
  const c = started(t, 3);
  const mark = c.changes.length;
  const killedAt = killAndTell(c, [1, 2], [1, 3]);
  c.run(8 * FAILOVER_MS, () => c.main() !== undefined);
  t.equal(c.main(), 1, 'the next in rank is main');
  const at = c.firstMainAfter(killedAt)! - killedAt;
  // Two heartbeats from the last one heard (before the kill), a tick, a pre-vote and a vote round trip.
  t.ok(at <= 2 * HEARTBEAT_MS + TICK_MS + 4 * LINK_MS, `rank 1 was main ${at} ms after the kill (failover-ms is ${FAILOVER_MS})`);
  c.run(4 * FAILOVER_MS);
  t.same(c.mainsSince(mark), [`1 primary ${c.nodes[1]!.term}`], 'no other tracker was main after the kill, and rank 1 stays');
  t.end();
});

t.test('three trackers, only rank 1 refused (rank 2 still hears the main for a while): rank 1 asks again and leads once rank 2 stops hearing it', (t) => {
  const c = started(t, 3);
  const mark = c.changes.length;
  const killedAt = killAndTell(c, [1], [1]);
  c.run(8 * FAILOVER_MS, () => c.main() !== undefined);
  t.equal(c.main(), 1, 'the next in rank is main');
  const at = c.firstMainAfter(killedAt)! - killedAt;
  t.ok(at <= FAILOVER_MS + HEARTBEAT_MS, `rank 1 was main ${at} ms after the kill: when rank 2's failover period ended, not a whole election delay later`);
  t.ok(c.preVoteAsks.filter((a) => a.from === 1 && a.to === 2 && a.at >= killedAt).length >= 2, 'rank 2 refused the first ask (it still heard the main), and rank 1 asked again');
  t.same(c.mainsSince(mark), [`1 primary ${c.nodes[1]!.term}`], 'rank 2 was never main');
  t.end();
});

t.test('rank 2 refused by the dead main first: it still waits its rank step, and rank 1 leads', (t) => {
  const c = started(t, 3);
  const mark = c.changes.length;
  const killedAt = killAndTell(c, [2, 1], [1, 1 + HEARTBEAT_MS / 2 - 5]);
  c.run(8 * FAILOVER_MS, () => c.main() !== undefined);
  t.equal(c.main(), 1, 'the next in rank is main');
  t.ok(c.firstMainAfter(killedAt)! - killedAt < FAILOVER_MS, 'well before a failover period');
  t.same(c.mainsSince(mark), [`1 primary ${c.nodes[1]!.term}`], 'rank 2 was never main');
  t.end();
});

t.test('told wrongly that a main that lives is gone (both backups, again and again): it stays main, in its term', (t) => {
  const c = started(t, 3);
  const term = c.nodes[0]!.term;
  const mark = c.changes.length;
  for (let i = 0; i < 20; i++) {
    for (const rank of [1, 2]) c.nodes[rank]!.peerGone(c.now, 0);
    c.run(HEARTBEAT_MS / 2);
  }
  c.run(4 * FAILOVER_MS);
  t.equal(c.main(), 0, 'rank 0 is still main');
  t.equal(c.nodes[0]!.term, term, 'in the same term');
  t.same(c.mainsSince(mark), [], 'no change of main');
  t.end();
});

t.test('two trackers, the main killed and the backup refused by it: the backup acts alone two heartbeats after it last heard the main', (t) => {
  const c = started(t, 2);
  const killedAt = killAndTell(c, [1], [1]);
  c.run(8 * FAILOVER_MS, () => c.main() !== undefined);
  t.equal(c.main(), 1, 'the backup is main');
  const at = c.firstMainAfter(killedAt)! - killedAt;
  t.ok(at <= 2 * HEARTBEAT_MS + TICK_MS, `${at} ms after the kill (failover-ms is ${FAILOVER_MS})`);
  t.end();
});

t.test("two trackers, the main killed just after a status message that came later than its last append: the backup still acts alone two heartbeats after it last heard the main", (t) => {
  const c = started(t, 2);
  // A write shifts the main's appends off the grid of its status messages (each keeps its own timer).
  c.run(7);
  c.nodes[0]!.propose({ op: 'blacklist-add', entry: { target: '10.0.0.8', reason: 'test', since: 1, addedBy: 'test' } });
  const last = (t: string): number => c.sent.findLast((s) => s.from === 0 && s.to === 1 && s.t === t)?.at ?? -Infinity;
  c.run(20 * HEARTBEAT_MS, () => c.sent.findLast((s) => s.from === 0 && s.to === 1)?.t === 'status' && last('status') - last('append') >= 2 * TICK_MS);
  const statusLead = last('status') - last('append');
  t.ok(statusLead >= 2 * TICK_MS, `the main's last message was a status, ${statusLead} ms after its last append`);
  const killedAt = killAndTell(c, [1], [1 + LINK_MS]);
  c.run(8 * FAILOVER_MS, () => c.main() !== undefined);
  t.equal(c.main(), 1, 'the backup is main');
  const at = c.firstMainAfter(killedAt)! - killedAt;
  t.ok(at <= 2 * HEARTBEAT_MS + TICK_MS + LINK_MS, `${at} ms after the kill (failover-ms is ${FAILOVER_MS})`);
  t.end();
});

t.test('two trackers, the backup killed and the main refused by it: the main commits alone after two heartbeats, not failover-ms', (t) => {
  const c = started(t, 2);
  const killedAt = c.now;
  c.dead.add(1);
  c.nodes[0]!.peerGone(c.now, 1);
  const { index } = c.nodes[0]!.propose({ op: 'blacklist-add', entry: { target: '10.0.0.9', reason: 'test', since: 1, addedBy: 'test' } });
  c.run(8 * FAILOVER_MS, () => c.nodes[0]!.commit >= index);
  t.ok(c.nodes[0]!.commit >= index, 'the write committed, on the main alone');
  t.ok(c.now - killedAt <= 2 * HEARTBEAT_MS + TICK_MS, `${c.now - killedAt} ms after the kill (failover-ms is ${FAILOVER_MS})`);
  t.end();
});
