/**
 * A main hands command back to a returning higher-ranked tracker only once that tracker has sessions from
 * nearly all of the main's peers (their standbys, moved there over the half minute after it returned), or
 * after takebackWaitMs at most: the takeback is then a promotion for most of the fleet, not every peer
 * dialling the returning main at once (docs/scaling.md: at 5,000 peers that never completed). Three real
 * RaftNodes on a virtual clock; each rank's session count is set by the test.
 */
import t, { type Test } from 'tap';
import { VirtualCluster } from '../helpers/raft.js';

const HEARTBEAT_MS = 50;
const FAILOVER_MS = 250;
const WAIT_MS = 20_000;
const FLEET = 5000;

/** Rank 0 killed, rank 1 main with the fleet's sessions, rank 0 back and caught up with none. */
function returned(t: Test, sessions: number[]): VirtualCluster {
  const trio = new VirtualCluster({ size: 3, heartbeatMs: HEARTBEAT_MS, failoverMs: FAILOVER_MS, linkMs: 5, sessions, takebackWaitMs: WAIT_MS });
  t.ok(trio.settled(), 'rank 0 is main once the three have met (an election: nothing to wait for)');
  trio.dead.add(0);
  trio.run(8 * FAILOVER_MS, () => trio.main() === 1);
  t.equal(trio.main(), 1, 'rank 1 took over');
  sessions.splice(0, 3, 0, FLEET, 0);
  trio.dead.delete(0);
  trio.run(10 * FAILOVER_MS, () => trio.nodes[0]!.role === 'backup');
  t.equal(trio.nodes[0]!.role, 'backup', 'rank 0 is back, a backup in sync');
  return trio;
}

t.test('rank 0 returns with no peer sessions: rank 1 keeps command; once rank 0 has all but 256 of them, command goes back within a few heartbeats', (t) => {
  const sessions = [0, 0, 0];
  const trio = returned(t, sessions);
  const mark = trio.changes.length;
  trio.run(WAIT_MS / 2);
  t.equal(trio.main(), 1, `${WAIT_MS / 2} ms later rank 1 is still main`);
  t.same(trio.mainsSince(mark), [], 'and no tracker became main meanwhile');
  sessions[0] = FLEET - 300;
  trio.run(WAIT_MS / 4);
  t.equal(trio.main(), 1, 'with 300 peers missing (more than 256 and a twentieth), still rank 1');
  sessions[0] = FLEET - 256;
  const at = trio.now;
  trio.run(WAIT_MS / 4, () => trio.main() === 0);
  t.equal(trio.main(), 0, 'with 256 missing, rank 0 took command back');
  t.ok(trio.now - at < 10 * HEARTBEAT_MS, `within ${trio.now - at} ms (under 10 heartbeats)`);
  t.end();
});

t.test('rank 0 never gathers the peers (they keep no standby sessions): command goes back after the wait, not before, and not never', (t) => {
  const sessions = [0, 0, 0];
  const trio = returned(t, sessions);
  const back = trio.now;
  trio.run(2 * WAIT_MS, () => trio.main() === 0);
  t.equal(trio.main(), 0, 'rank 0 took command back');
  const took = trio.now - back;
  t.ok(took >= WAIT_MS && took < WAIT_MS + 10 * HEARTBEAT_MS, `${took} ms after it was back in sync: the wait (${WAIT_MS} ms), and a few heartbeats`);
  t.end();
});

t.test('a small fleet (at most 256 peers) is handed back at once', (t) => {
  const trio = new VirtualCluster({ size: 3, heartbeatMs: HEARTBEAT_MS, failoverMs: FAILOVER_MS, linkMs: 5, sessions: [0, 0, 0], takebackWaitMs: WAIT_MS });
  t.ok(trio.settled(), 'rank 0 main');
  trio.dead.add(0);
  trio.run(8 * FAILOVER_MS, () => trio.main() === 1);
  trio.o.sessions!.splice(0, 3, 0, 256, 0);
  trio.dead.delete(0);
  const back = trio.now;
  trio.run(WAIT_MS, () => trio.main() === 0);
  t.equal(trio.main(), 0, 'rank 0 took command back');
  t.ok(trio.now - back < 40 * HEARTBEAT_MS, `${trio.now - back} ms after it returned, without waiting for sessions`);
  t.end();
});

t.test('with a write every 100 ms that rank 0 acknowledges a little later than rank 2, the wait still ends after --takeback-wait-ms: being a write behind for a moment does not start it over', (t) => {
  const sessions = [0, 0, 0];
  const trio = returned(t, sessions);
  trio.extra.set('0>1', 20); // rank 0's answers reach the main 20 ms after rank 2's
  const back = trio.now;
  let writes = 0;
  while (trio.now - back < 2 * WAIT_MS && trio.main() !== 0) {
    const main = trio.nodes[1]!;
    if (main.isPrimary) {
      main.propose({ op: 'blacklist-add', entry: { target: `10.9.${(writes >> 8) & 255}.${writes & 255}`, reason: 'load', since: writes, addedBy: 'test' } });
      writes++;
    }
    trio.run(100);
  }
  t.equal(trio.main(), 0, `rank 0 took command back (${writes} writes made meanwhile)`);
  const took = trio.now - back;
  t.ok(took >= WAIT_MS && took < WAIT_MS + 1000, `${took} ms after it was back in sync: the wait (${WAIT_MS} ms) and a moment`);
  t.end();
});
