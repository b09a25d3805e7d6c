/**
 * A main whose process dies (kill -9) is replaced without waiting out --failover-ms: its kernel refuses
 * the backups' connections, and a backup with no link from it left takes that for the main being gone,
 * so the next in rank runs once the main has missed two heartbeats. A main that is frozen (SIGSTOP) still
 * takes connections into its queue, so the backups wait the whole failover period, as they must for a
 * main that may yet wake. A main that wakes from such a freeze gets its peers' standby sessions back
 * (though each peer had marked it unresponsive) before it takes command back. Real p2p-tracker processes
 * (test/helpers/tracker-process.ts).
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { parseAddress, silentLogger } from '../../protocol/index.js';
import { TrackerClient } from '../../peerd/tracker-client.js';
import { clientIdentity } from '../helpers/tls.js';
import { until } from '../helpers/wait.js';
import { settle, TrackerCluster, type TrackerProcess } from '../helpers/tracker-process.js';

const HEARTBEAT_MS = 100;
/** Long, so that a takeover well before it can only come from the refused connections. */
const LONG_FAILOVER_MS = 3000;
const FAILOVER_MS = 800;

t.test('kill -9 of the main: the next in rank is main well before --failover-ms, and stays', async (t) => {
  const c = await TrackerCluster.create(t, { size: 3, heartbeatMs: HEARTBEAT_MS, failoverMs: LONG_FAILOVER_MS });
  const [t0, t1, t2] = c.trackers as [TrackerProcess, TrackerProcess, TrackerProcess];
  for (const tr of c.trackers) tr.start();
  await c.converged(c.trackers, { main: t0, deadlineMs: 3 * LONG_FAILOVER_MS });
  const ban = await t0.admin.add('10.77.0.1', 'before the kill');
  t.ok(ban.ok, 'a ban acknowledged before the kill');

  const killedAt = Date.now();
  await t0.kill9();
  const took = await settle('t1 to take over', LONG_FAILOVER_MS, () => t1.selfStatus(), (r) => r?.role === 'primary', 10);
  const ms = Date.now() - killedAt;
  t.ok(took.ok && ms < LONG_FAILOVER_MS / 2, `t1 is main ${ms} ms after the kill (--failover-ms ${LONG_FAILOVER_MS}; it was ${took.last?.role ?? 'silent'})`);
  t.match(t1.log + t2.log, /refused a connection and has no link open to this tracker/, 'a backup logged why it did not wait');
  const main = await c.oneMain([t1, t2], { stableMs: 4 * HEARTBEAT_MS });
  t.equal(main.main, t1, 't1 stays main, and t2 follows it');
  const rows = await t1.admin.status();
  t.same(rows.map((r) => r.reachable), [false, true, true], `admin status on the new main lists the killed tracker as unreachable, well within --failover-ms (${Date.now() - killedAt} ms after the kill)`);
  t.same(await t1.admin.blacklist(), ['10.77.0.1'], 'the ban acknowledged before the kill is listed by the new main');
  const after = await t1.admin.add('10.77.0.2', 'after the takeover');
  t.ok(after.ok, 'the new main takes writes');
});

t.test('SIGSTOP of the main: its queue still takes connections, so the backups wait --failover-ms before one takes over', async (t) => {
  const c = await TrackerCluster.create(t, { size: 3, heartbeatMs: HEARTBEAT_MS, failoverMs: FAILOVER_MS });
  const [t0, t1, t2] = c.trackers as [TrackerProcess, TrackerProcess, TrackerProcess];
  for (const tr of c.trackers) tr.start();
  await c.converged(c.trackers, { main: t0 });

  const stoppedAt = Date.now();
  t0.pause();
  const took = await settle('t1 to take over', 4 * FAILOVER_MS, () => t1.selfStatus(), (r) => r?.role === 'primary', 10);
  const ms = Date.now() - stoppedAt;
  t.ok(took.ok, `t1 took over from the frozen main (${ms} ms after SIGSTOP)`);
  // The silence counts from the last heartbeat heard, a period or more before the SIGSTOP on a busy machine;
  // a main taken for gone would have been replaced two heartbeats (200 ms) after it.
  t.ok(ms >= FAILOVER_MS / 2, `not two heartbeats after it: ${ms} ms (--failover-ms ${FAILOVER_MS})`);
  t.notMatch(t1.log + t2.log, /refused a connection/, 'no backup took the frozen main for gone');
});

t.test('every tracker frozen at once past --failover-ms (a stalled machine): the main keeps command in its term, takes a ban at once, and drops a peer that left meanwhile', async (t) => {
  const leaseMs = 2000;
  const c = await TrackerCluster.create(t, { size: 3, heartbeatMs: HEARTBEAT_MS, failoverMs: FAILOVER_MS, extraArgs: ['--lease-ms', String(leaseMs)] });
  const [t0, t1, t2] = c.trackers as [TrackerProcess, TrackerProcess, TrackerProcess];
  for (const tr of c.trackers) tr.start();
  await c.converged(c.trackers, { main: t0 });
  const before = (await t0.selfStatus())!;
  const changes = t0.roleChanges().length;
  const client = (name: string): TrackerClient => {
    const files = name ? [{ id: randomBytes(32), size: 10, name, complete: true }] : [];
    const peer = new TrackerClient({ trackers: [parseAddress(t0.address)], ...clientIdentity(), advertisePort: () => 9, announce: () => files, logger: silentLogger, standby: false });
    peer.start();
    t.teardown(() => peer.close());
    return peer;
  };
  const leaving = client('stall-leaves.bin');
  const reader = client('');
  const listed = async (): Promise<number> => (await reader.request('SEARCH', { text: 'stall-leaves', limit: 10 }, 'SEARCH_RESULT')).files.length;
  await until('the leaving peer\'s file listed on t0', async () => (await listed()) === 1, 10_000);

  // The sweep that follows t0's own election runs a lease after it and finds nothing to drop; it must be
  // over before the stall, or it would be what drops the peer below (it logs nothing then: a wait on time).
  await new Promise((resolve) => setTimeout(resolve, leaseMs));
  for (const tr of c.trackers) tr.pause();
  leaving.close(); // its session ends while t0 stands still: t0 reads that only once it runs again
  await new Promise((resolve) => setTimeout(resolve, 2 * FAILOVER_MS)); // the stall itself: nothing to wait on
  // t0 runs again first, so it reads the peer's leaving while it asks the others (who answer once they run
  // too, well within --failover-ms): the drop is refused then, as every write is.
  t0.resume();
  await new Promise((resolve) => setTimeout(resolve, FAILOVER_MS / 3));
  t1.resume();
  t2.resume();

  // While it asks the others (a round trip) it refuses writes with P2P_NOT_PRIMARY: try again, as a peer does.
  let ban = await t0.admin.add('10.77.0.9', 'after the stall');
  for (let i = 0; i < 3 && !ban.ok && ban.code === 'P2P_NOT_PRIMARY'; i++) ban = await t0.admin.add('10.77.0.9', 'after the stall');
  t.ok(ban.ok, `t0 took a ban right after the stall (${ban.ok ? `${ban.ms} ms` : ban.message})`);
  const { main, rows } = await c.oneMain([t0, t1, t2], { stableMs: 4 * HEARTBEAT_MS });
  t.equal(main.name, 't0', 't0 is still the one main');
  t.equal(rows.get(t0)?.term, before.term, `in the same term (${before.term}): no election`);
  t.same(t0.roleChanges().slice(changes), [], 'and it never changed role (before: frozen, it stepped down and an election followed)');
  t.match(t0.log, /a majority answered after the freeze/, 'it asked, and kept command');
  // A drop refused while it asked is made by the sweep a lease later (before: listed until the next takeover).
  await until('the file of the peer that left during the stall no longer listed', async () => (await listed()) === 0, 4 * leaseMs);
  t.pass('the departed peer is dropped');
});

t.test('a main that hung (SIGSTOP, then kill -9) and came back gets its peers\' standby sessions back, though each peer had marked it unresponsive, before it takes command back', async (t) => {
  // No straggler allowed, and a long wait: the takeback waits for this one peer's standby at t0.
  const c = await TrackerCluster.create(t, { size: 3, heartbeatMs: HEARTBEAT_MS, failoverMs: FAILOVER_MS, extraArgs: ['--takeback-stragglers', '0', '--takeback-wait-ms', '60000'] });
  const [t0, t1, t2] = c.trackers as [TrackerProcess, TrackerProcess, TrackerProcess];
  for (const tr of c.trackers) tr.start();
  await c.converged(c.trackers, { main: t0 });
  const files = [{ id: randomBytes(32), size: 10, name: 'frozen.bin', complete: true }];
  const peer = new TrackerClient({ trackers: c.trackers.map((tr) => parseAddress(tr.address)), ...clientIdentity(), advertisePort: () => 9, announce: () => files, logger: silentLogger, standbySpreadMs: 0, standbyUpgradeMs: 300 });
  peer.start();
  t.teardown(() => peer.close());
  await until('the peer on t0 with its standby on t1', () => peer.current === t0.address && peer.standbyAddress === t1.address, 10_000);

  t0.pause();
  await until('the peer on t1, the main, with its standby on t2 (t0 does not answer)', () => peer.current === t1.address && peer.role === 'primary' && peer.standbyAddress === t2.address, 15_000).catch((err: Error) => {
    throw new Error(`${err.message}; the peer: on ${peer.current} (${peer.role}, ${peer.state}), standby ${peer.standbyAddress}; t0 ${t0.address}, t1 ${t1.address}, t2 ${t2.address}`);
  });
  // Killed while frozen and started again: a tracker that hung, as after a host's power cut. (Woken from
  // SIGSTOP instead, it would count the peer's old session, closed while it was frozen, until it reads the
  // close: its first status after waking comes before that.)
  await t0.kill9();
  t0.start();
  await until('the standby to move back to t0', () => peer.standbyAddress === t0.address, 15_000);
  const atT0 = peer.standby!.conn;
  await until('t0 to take command back, and the peer to be on it', () => peer.current === t0.address && peer.role === 'primary', 15_000);
  t.equal(peer.conn, atT0, 'the session in use at t0 is that standby: promoted, no handshake at the takeback');
  t.match(t1.log, /has sessions from 1 peers \(this main 1\): handing command over/, 't1 handed command over once t0 had the peer\'s session');
});
