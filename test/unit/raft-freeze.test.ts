/**
 * A main of three trackers that finds its own loop stalled past failover-ms (a long synchronous stretch on
 * a loaded machine, SIGSTOP, a hung VM) asks a majority whether its term still holds before it gives up
 * command: one slow turn of the loop no longer makes an election, a second change of command and a
 * TRACKER_CHANGED to every peer (docs/scaling.md: a new main frozen 1,043 ms at 5,000 peers went term
 * 4 -> 5 -> 7). It still never acts beside a newer main: what it writes meanwhile commits only if a
 * majority takes it in its term. Three real RaftNodes on a virtual clock.
 */
import t from 'tap';
import type { Op } from '../../daemon/state.js';
import { VirtualCluster } from '../helpers/raft.js';

const HEARTBEAT_MS = 50;
const FAILOVER_MS = 250;
/** A stall the backups can see as less than failover-ms of silence, and the main, reading late, as more. */
const STALL_MS = 220;

const ban = (target: string): Op => ({ op: 'blacklist-add', entry: { target, reason: 'test', since: 1, addedBy: 'test' } });

function trio(): VirtualCluster {
  const c = new VirtualCluster({ size: 3, heartbeatMs: HEARTBEAT_MS, failoverMs: FAILOVER_MS, linkMs: 5 });
  c.settled();
  return c;
}

t.test('the whole machine stalls (every tracker frozen past failover-ms): the same main keeps command in the same term, and takes writes at once', (t) => {
  const c = trio();
  t.equal(c.main(), 0, 'rank 0 is main');
  const term = c.nodes[0]!.term;
  const mark = c.changes.length;
  for (let r = 0; r < 3; r++) c.paused.add(r);
  c.run(FAILOVER_MS + 200);
  c.paused.clear();
  c.run(10 * HEARTBEAT_MS);
  t.same(c.changes.slice(mark), [], 'no change of role on any tracker (before: rank 0 stepped down, and an election followed)');
  t.equal(c.main(), 0, 'rank 0 is still main');
  t.equal(c.nodes[0]!.term, term, 'in the same term');
  const { index } = c.nodes[0]!.propose(ban('10.0.0.1'));
  c.run(4 * HEARTBEAT_MS, () => c.nodes.every((n) => n.commit >= index));
  t.ok(c.states.every((s) => s.isBanned('x', '10.0.0.1')), 'a ban proposed then is committed and applied on all three');
  t.end();
});

t.test('the main alone frozen while the others elect a new one: on waking it takes a write, but that write is never committed, and it steps down as soon as it reads the newer term', (t) => {
  const c = trio();
  const oldTerm = c.nodes[0]!.term;
  c.paused.add(0);
  c.run(8 * FAILOVER_MS, () => c.nodes[1]!.isPrimary);
  t.ok(c.nodes[1]!.isPrimary && c.nodes[1]!.term > oldTerm, 'rank 1 took over in a newer term');
  c.run(4 * HEARTBEAT_MS);
  // It wakes: its first turn sees the gap (and keeps command while it asks), before anything queued is read.
  c.paused.delete(0);
  c.nodes[0]!.tick(c.now);
  t.ok(c.nodes[0]!.isPrimary, 'on waking it is still main in its own eyes, for the moment it takes to ask');
  const { index, term } = c.nodes[0]!.propose(ban('10.0.0.2'));
  t.equal(term, oldTerm, 'a write taken in its old term');
  const newTerm = c.nodes[1]!.term;
  const mark = c.changes.length;
  const woke = c.now;
  let committedOld = false;
  c.run(20 * HEARTBEAT_MS, () => {
    committedOld ||= c.nodes.some((n) => n.isPrimary && n.term === oldTerm && n.commit >= index);
    return false;
  });
  t.notOk(committedOld, 'never committed in the old term');
  const first = c.changes[mark];
  t.equal(first, `0 syncing ${newTerm}`, 'it stepped down, to the newer term, as soon as it read what rank 1 sent');
  t.ok(c.changedAt[mark]! - woke <= 2 * HEARTBEAT_MS, `within ${c.changedAt[mark]! - woke} ms of waking`);
  t.ok(c.main() === 0 && c.nodes[0]!.term > newTerm, 'later, rank 0 has command back by the chain of command, in a newer term still');
  t.ok(c.states.every((s) => !s.isBanned('x', '10.0.0.2')), 'and the write taken in the old term is on no tracker');
  t.end();
});

t.test('a main that wakes cut off from both others gives up command failover-ms after waking, not at once and not never', (t) => {
  const c = trio();
  c.paused.add(0);
  for (const r of [1, 2]) {
    c.extra.set(`0>${r}`, Infinity);
    c.extra.set(`${r}>0`, Infinity);
  }
  // The others are stalled too, so that nobody takes over meanwhile: only the main's own view changes.
  c.paused.add(1);
  c.paused.add(2);
  c.run(FAILOVER_MS + 100);
  c.paused.clear();
  c.nodes[1]!.tick(c.now); // they see their own gap first, and give the main a fresh failover period
  c.nodes[2]!.tick(c.now);
  const woke = c.now;
  c.run(3 * FAILOVER_MS, () => !c.nodes[0]!.isPrimary);
  t.notOk(c.nodes[0]!.isPrimary, 'rank 0 gave up command');
  const after = c.now - woke;
  t.ok(after >= FAILOVER_MS - 5 && after <= FAILOVER_MS + 2 * HEARTBEAT_MS, `${after} ms after it woke (failover-ms ${FAILOVER_MS})`);
  t.end();
});

t.test('a main whose loop stalls for nearly failover-ms reads the answers that came meanwhile before it judges the others silent: no change of command', (t) => {
  // A stall of STALL_MS, started at these phases of the heartbeats, leaves the backups under failover-ms of
  // silence (the main's last append reached them), while the answers to that append wait unread behind
  // the main's first tick: it last read an answer more than failover-ms before. At other phases the
  // backups' silence passes failover-ms too, and a change of command is right.
  const steps: string[] = [];
  for (const offset of [0, 1, 2, 3, 4, 45, 46, 47, 48, 49]) {
    const c = trio();
    c.run(2 * HEARTBEAT_MS + offset);
    const mark = c.changes.length;
    c.paused.add(0);
    c.run(STALL_MS);
    c.paused.delete(0);
    c.run(10 * HEARTBEAT_MS);
    if (c.changes.length > mark || c.main() !== 0) steps.push(`stalled at +${offset} ms: ${c.changes.slice(mark).join(', ')}`);
  }
  t.same(steps, [], `rank 0 stays main, no tracker changes role (before: it stepped down at each of these phases, and an election followed)`);
  t.end();
});

t.test('answers that reached a frozen main while it stood still do not confirm it: cut off from the others (who elected a new main), it never acts on them and steps down failover-ms after waking', (t) => {
  const c = trio();
  c.run(HEARTBEAT_MS + 7); // an append is out to each backup; their answers come while rank 0 stands still
  c.paused.add(0);
  for (const r of [1, 2]) {
    c.extra.set(`0>${r}`, Infinity);
    c.extra.set(`${r}>0`, Infinity);
  }
  c.run(8 * FAILOVER_MS, () => c.nodes[1]!.isPrimary);
  t.ok(c.nodes[1]!.isPrimary, 'rank 1 took over meanwhile');
  c.paused.delete(0);
  const woke = c.now;
  let confirmedWhileMain = false;
  c.run(3 * FAILOVER_MS, () => {
    if (c.nodes[0]!.isPrimary && !c.nodes[0]!.confirming && c.now > woke) confirmedWhileMain = true;
    return !c.nodes[0]!.isPrimary;
  });
  t.notOk(confirmedWhileMain, 'rank 0 never took itself for confirmed (before: the answers read after the wake confirmed it)');
  t.notOk(c.nodes[0]!.isPrimary, 'and it gave up command');
  t.ok(c.now - woke <= FAILOVER_MS + 2 * HEARTBEAT_MS, `${c.now - woke} ms after it woke`);
  t.end();
});

t.test('a main cut off from both others whose every tick comes late (a loop busy 200 ms a turn) still gives up command within failover-ms and a tick or two', (t) => {
  const c = trio();
  for (const r of [1, 2]) {
    c.extra.set(`0>${r}`, Infinity);
    c.extra.set(`${r}>0`, Infinity);
  }
  const cut = c.now;
  while (c.nodes[0]!.isPrimary && c.now - cut < 10 * FAILOVER_MS) {
    c.paused.add(0);
    c.run(STALL_MS - 20);
    c.paused.delete(0);
    c.run(1);
  }
  t.notOk(c.nodes[0]!.isPrimary, 'rank 0 gave up command (before: each late tick put the judgement off, for good)');
  // Answers on their way at the cut are read at the first wake; from there, failover-ms and two late ticks.
  t.ok(c.now - cut <= FAILOVER_MS + 3 * STALL_MS, `${c.now - cut} ms after the cut`);
  t.end();
});

t.test('a machine that stalls past failover-ms at every turn: the main is not left refusing writes for good (it confirms, or gives up command failover-ms after the first wake)', (t) => {
  const c = trio();
  let stuckSince: number | undefined;
  let longest = 0;
  for (let i = 0; i < 20; i++) {
    for (let r = 0; r < 3; r++) c.paused.add(r);
    c.run(FAILOVER_MS + 50);
    c.paused.clear();
    for (let ms = 0; ms < 8; ms++) {
      c.run(1);
      const stuck = c.nodes[0]!.isPrimary && c.nodes[0]!.confirming;
      if (stuck) stuckSince ??= c.now;
      else stuckSince = undefined;
      if (stuckSince !== undefined) longest = Math.max(longest, c.now - stuckSince);
    }
  }
  t.ok(longest <= 2 * FAILOVER_MS + 100, `rank 0 was main and refusing writes for ${longest} ms at most (before: as long as the stalls went on)`);
  t.end();
});
