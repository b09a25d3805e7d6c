/**
 * Tracker replication with Tracker instances in this process, on real sockets: partitions made by small
 * TCP proxies placed between the trackers (three trackers: a majority takes over, never two mains in one
 * term; two trackers: both act, and the merge on healing loses nothing acknowledged), the rule that a
 * tracker with fresh data never becomes main while one with state is reachable, reads and refused writes
 * on a backup, holders of peers that never come back dropped after the lease, and the failover timing on
 * a virtual clock (a silent main, and a stopped one whose port refuses connections).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pino from 'pino';
import t from 'tap';
import { SWEEP_SLICE } from '../../daemon/cluster.js';
import type { TrackerOptions } from '../../daemon/tracker.js';
import { dial, generateKeyPair, PEER_FEATURES, RemoteError, silentLogger, toP2PError, VirtualClock, type Address, type Connection } from '../../protocol/index.js';
import { clientHandshake } from '../../peerd/handshake.js';
import { TrackerClient, type TrackerClientOptions } from '../../peerd/tracker-client.js';
import { Fleet } from '../helpers/fleet.js';
import { TcpProxy } from '../helpers/relay.js';
import { reservePorts, until } from '../helpers/wait.js';
import { clientIdentity, peerHandshake, tlsAs } from '../helpers/tls.js';
import type { Tap } from '../helpers/tap.js';

const HEARTBEAT_MS = 100;
const FAILOVER_MS = 500;
const addr = (port: number): Address => ({ host: '127.0.0.1', port });
const label = (port: number): string => `127.0.0.1:${port}`;

/** A planned cluster of Trackers in this process, with the timings of these tests (see Fleet.planCluster). */
async function clusterOn(t: Tap, ports: number[], opts: Partial<TrackerOptions> = {}, proxies = false): Promise<Fleet> {
  const fleet = new Fleet(t);
  await fleet.planCluster(ports, { heartbeatMs: HEARTBEAT_MS, failoverMs: FAILOVER_MS, ...opts }, { proxies });
  return fleet;
}

async function blacklistOn(fleet: Fleet, i: number): Promise<string[]> {
  return fleet.trackerAt(i).state.blacklistEntries().map((e) => e.target);
}

t.test('a backup answers reads from its copy, refuses writes naming the main, and says so in WELCOME and admin status', async (t) => {
  const ports = await reservePorts(2);
  const fleet = await clusterOn(t, ports);
  await fleet.startMember(0);
  await fleet.startMember(1);
  await until('a main and an in-sync backup', () => fleet.converged(0));

  const seeder = await peerHandshake(ports[0]!);
  t.teardown(() => seeder.conn.close());
  t.equal(seeder.welcome.role, 'primary', 'the main says it is the main');
  const fileId = randomBytes(32);
  await seeder.conn.request('REGISTER', { files: [{ id: fileId, size: 1234, name: 'holiday.mkv', complete: true }] }, 'OK');
  const admin = await fleet.admin(0);
  await admin.add('10.3.3.3', 'test');

  const reader = await peerHandshake(ports[1]!);
  t.teardown(() => reader.conn.close());
  t.equal(reader.welcome.role, 'backup', 'WELCOME from the backup says backup');
  t.equal(reader.welcome.primary, label(ports[0]!), 'and names the main');
  // The main answered only once the backup had the writes in its log.
  const hits = await reader.conn.request('SEARCH', { text: 'holiday', limit: 10 }, 'SEARCH_RESULT');
  t.same(hits.files.map((f) => f.name), ['holiday.mkv'], 'search on the backup finds a file registered on the main');
  const holders = await reader.conn.request('LOOKUP', { id: fileId }, 'LOOKUP_RESULT');
  t.equal(holders.peers.length, 1, 'lookup on the backup lists the holder');
  // A backup applies a write once it hears it is committed: right after the main does, one message later.
  const verdict = await until('the ban on the backup', async () => {
    const v = await reader.conn.request('BLACKLIST_CHECK', { peerId: 'a'.repeat(40), host: '10.3.3.3' }, 'BLACKLIST_VERDICT');
    return v.banned ? v : undefined;
  }, 2000);
  t.ok(verdict.banned, 'the blacklist check on the backup sees the entry added on the main');

  const refused = await reader.conn.request('REGISTER', { files: [] }, 'OK').then(() => undefined, (err: unknown) => err);
  t.ok(refused instanceof RemoteError && refused.code === 'P2P_NOT_PRIMARY', 'a write on the backup is refused with P2P_NOT_PRIMARY');
  t.match((refused as Error).message, label(ports[0]!), 'the refusal names the main');
  const adminB = await fleet.admin(1);
  await t.rejects(adminB.add('10.4.4.4', ''), { code: 'P2P_NOT_PRIMARY' }, 'an admin write on the backup is refused too');

  // The backup's view of the main comes from the main's periodic status: it may lag a heartbeat or two.
  const view = (rows: Awaited<ReturnType<typeof adminB.status>>['trackers']): unknown[] => rows.map((r) => [r.address, r.role, r.reachable, r.behind]);
  const expected = JSON.stringify([
    [label(ports[0]!), 'primary', true, 0],
    [label(ports[1]!), 'backup', true, 0],
  ]);
  const { trackers } = await until('the backup to see the main as main', async () => {
    const st = await adminB.status();
    return JSON.stringify(view(st.trackers)) === expected && st.trackers[0]!.term === st.trackers[1]!.term ? st : undefined;
  }, 3000).catch(() => adminB.status());
  t.same(
    view(trackers),
    [
      [label(ports[0]!), 'primary', true, 0],
      [label(ports[1]!), 'backup', true, 0],
    ],
    'admin status on the backup lists both trackers, their roles, reachability and lag',
  );
  t.equal(trackers[1]!.hash, fleet.trackerAt(0).state.stateHash(), "the backup's state hash equals the main's");
  t.equal(trackers[0]!.term, trackers[1]!.term, 'both in the same term');
});

t.test('three trackers, the main cut off: the majority takes over, the cut-off main cannot make a write stick, never two mains in one term', async (t) => {
  const ports = await reservePorts(3);
  const fleet = await clusterOn(t, ports, {}, true);
  for (let i = 0; i < 3; i++) await fleet.startMember(i);
  await until('t0 main, two in-sync backups', () => fleet.converged(0));
  const adminA = await fleet.admin(0);
  const adminB = await fleet.admin(1);
  await adminA.add('10.5.0.1', 'before the partition');
  const oldTerm = fleet.trackerAt(0).state.term;

  // Stall every byte between t0 and the others (held, delivered late when the partition heals).
  const cutAt = Date.now();
  fleet.link(0, [1, 2], 'stall');
  const stale = await adminA.add('10.5.0.66', 'on the cut-off main').then(() => 'acknowledged', (err: unknown) => toP2PError(err).code);
  t.not(stale, 'acknowledged', `the cut-off main could not get a majority for a write (${stale})`);
  await until('t0 to stop acting as main', () => fleet.trackerAt(0).cluster.role !== 'primary', FAILOVER_MS * 3);
  await until('t1 to take over with the vote of t2', () => fleet.trackerAt(1).cluster.role === 'primary', 5000, 1);
  // At once, before t2 has copied the new main's state: the write waits for a majority, it does not fail.
  await adminB.add('10.5.0.2', 'during the partition');
  t.comment(`takeover by the majority ${Date.now() - cutAt} ms after the cut`);
  t.ok(fleet.trackerAt(1).state.term > oldTerm, 'in a newer term');
  t.equal(fleet.trackerAt(1).cluster.role, 'primary', 'a write right after the takeover did not unsettle the new main');
  await t.rejects(adminA.add('10.5.0.67', ''), { code: 'P2P_NOT_PRIMARY' }, 'the minority refuses writes');

  fleet.link(0, [1, 2], 'pass');
  await until('t0 to come back, copy the state and take command again', () => fleet.converged(0), 10_000);
  for (let i = 0; i < 3; i++) {
    const targets = await blacklistOn(fleet, i);
    t.ok(targets.includes('10.5.0.1') && targets.includes('10.5.0.2'), `t${i}: every acknowledged write is there`);
    t.notOk(targets.includes('10.5.0.66') || targets.includes('10.5.0.67'), `t${i}: the cut-off main's writes did not stick`);
  }
  const terms = fleet.primaryTerms();
  t.equal(new Set(terms.map((x) => x.term)).size, terms.length, `never two mains in one term (${terms.map((x) => `${x.name}@${x.term}`).join(', ')})`);
});

t.test('two trackers split apart both act; on healing they merge and nothing acknowledged is lost', async (t) => {
  const ports = await reservePorts(2);
  const fleet = await clusterOn(t, ports, {}, true);
  await fleet.startMember(0);
  await fleet.startMember(1);
  await until('t0 main, t1 in sync', () => fleet.converged(0));
  const adminA = await fleet.admin(0);
  const adminB = await fleet.admin(1);
  await adminA.add('10.6.0.1', 'before');
  await adminA.add('10.6.0.2', 'before');

  fleet.link(0, [1], 'drop');
  await until('t1 to take over alone', () => fleet.trackerAt(1).cluster.role === 'primary', 5000);
  t.equal(fleet.trackerAt(0).cluster.role, 'primary', 't0 still acts: with two trackers a partition leaves two mains (the documented limit)');
  t.not(fleet.trackerAt(0).state.term, fleet.trackerAt(1).state.term, 'in different terms');
  await adminA.add('10.6.1.1', 'written on t0 alone');
  await adminA.add('10.6.1.2', 'written on t0 alone');
  await adminB.add('10.6.2.1', 'written on t1 alone');
  await adminB.remove('10.6.0.2'); // lifted on t1 after it was added: the removal is newer, it wins

  fleet.link(0, [1], 'pass');
  await until('the two to merge and t0 to take command again', () => fleet.converged(0), 10_000);
  for (let i = 0; i < 2; i++) {
    const targets = (await blacklistOn(fleet, i)).sort();
    t.same(targets, ['10.6.0.1', '10.6.1.1', '10.6.1.2', '10.6.2.1'], `t${i}: every acknowledged add from both sides, and the removal`);
  }
  t.equal(fleet.trackerAt(0).state.stateHash(), fleet.trackerAt(1).state.stateHash(), 'identical state hashes');
  t.notOk(fleet.trackerAt(0).state.store.hasPending() || fleet.trackerAt(1).state.store.hasPending(), 'nothing is left waiting to be merged');
  t.ok(fleet.members[1]!.log.some((l) => String(l.msg).startsWith('merging') && l.from === 0), 't0 handed what it had applied to t1 (a merge) before taking command back');
});

t.test('a tracker with fresh data never becomes main while one with state is reachable', async (t) => {
  const ports = await reservePorts(2);
  const fleet = await clusterOn(t, ports);
  await fleet.startMember(0);
  await fleet.startMember(1);
  await until('t0 main, t1 in sync', () => fleet.converged(0));
  await (await fleet.admin(0)).add('10.7.0.1', 'kept by t1');
  await until('the write on t1', async () => (await blacklistOn(fleet, 1)).includes('10.7.0.1'));
  await fleet.stopMember(0);
  await fleet.stopMember(1);
  // t0 loses its disk, all but its identity key (restored from where keys are provisioned: with a new key
  // the other tracker would rightly refuse it as an impostor).
  const dataDir = fleet.members[0]!.dataDir;
  const key = fs.readFileSync(path.join(dataDir, 'identity.key'));
  fs.rmSync(dataDir, { recursive: true });
  fs.mkdirSync(dataDir, { mode: 0o700 });
  fs.writeFileSync(path.join(dataDir, 'identity.key'), key, { mode: 0o600 });
  fleet.members[0]!.log.length = 0;

  await fleet.startMember(0);
  await fleet.startMember(1);
  await until('t0 to copy the state of t1 and take command', () => fleet.converged(0), 10_000);
  const log = fleet.members[0]!.log;
  const firstPrimary = log.find((l) => l.to === 'primary');
  t.ok(firstPrimary && Number(firstPrimary.applied) > 0, 'the fresh tracker became main only after copying the state of the one with state');
  t.ok(fleet.members[1]!.log.some((l) => l.to === 'primary'), 'the tracker with state acted as main meanwhile');
  t.ok((await blacklistOn(fleet, 0)).includes('10.7.0.1'), 'the state survived the fresh disk');
});

/**
 * Two trackers with a short lease, t0 main and t1 in sync, and a way to start peers that share one file
 * each (`retryMs`: how soon a peer dials again after a failed round).
 */
async function sweepCluster(t: Tap, leaseMs: number, retryMs?: number, size = 2, opts: Partial<TrackerOptions> = {}) {
  const ports = await reservePorts(size);
  const fleet = await clusterOn(t, ports, { leaseMs, ...opts });
  for (let i = 0; i < size; i++) await fleet.startMember(i);
  await until('t0 main, t1 in sync', () => fleet.converged(0));
  const peer = (list: Address[], name: string, options: Partial<TrackerClientOptions> = {}): TrackerClient => {
    const files = [{ id: randomBytes(32), size: 10, name, complete: true }];
    const c = new TrackerClient({ trackers: list, ...clientIdentity(), advertisePort: () => 9, announce: () => files, logger: silentLogger, ...(retryMs ? { retry: () => retryMs } : {}), ...options });
    c.start();
    t.teardown(() => c.close());
    return c;
  };
  return { ports, fleet, peer };
}

t.test('after a takeover, holders of peers that never reconnect are dropped after the lease; those that reconnect stay', async (t) => {
  const leaseMs = 1200;
  const { ports, fleet, peer: mk } = await sweepCluster(t, leaseMs);
  const trackers = ports.map(addr);
  mk([trackers[0]!], 'gone.bin'); // knows only t0: it never reaches the new main
  const stays = mk(trackers, 'stays.bin');
  const names = (): string[] => fleet.trackerAt(1).state.search('', 100).hits.map((h) => h.name).sort();
  await until('both files on the backup', () => names().length === 2);

  await fleet.stopMember(0);
  await until('t1 to take over', () => fleet.trackerAt(1).cluster.role === 'primary', 5000);
  const takeoverAt = Date.now();
  await until('the reconnecting peer to be served by t1', () => stays.current === label(ports[1]!) && stays.role === 'primary');
  t.same(names(), ['gone.bin', 'stays.bin'], 'right after the takeover both holders are still listed');
  await until('the holder that never came back to be dropped', () => names().length === 1, leaseMs + 3000);
  t.ok(Date.now() - takeoverAt >= leaseMs - 100, `not before the lease (${Date.now() - takeoverAt} ms)`);
  t.same(names(), ['stays.bin'], 'the peer that reconnected keeps its file');
});

t.test('after a takeover, many departed peers are dropped a slice at a time, each committed before the next, not in one batch that every tracker applies at once', async (t) => {
  const leaseMs = 1200;
  // Three trackers: a drop commits only once the other backup has it, so a sweep that did not wait for
  // its slices would have them all in the log before the first came back, and both would apply them at once.
  const { ports, fleet, peer: mk } = await sweepCluster(t, leaseMs, undefined, 3);
  const trackers = ports.map(addr);
  const departed = 5 * SWEEP_SLICE + 5;
  for (let i = 0; i < departed; i++) mk([trackers[0]!], `gone-${i}.bin`); // know only t0: never reach the new main
  mk(trackers, 'stays.bin');
  const listed = (i: number): number => fleet.trackerAt(i).state.sizes().peers;
  await until('every peer on both backups', () => listed(1) === departed + 1 && listed(2) === departed + 1, 20_000);

  await fleet.stopMember(0);
  await until('t1 to take over', () => fleet.trackerAt(1).cluster.role === 'primary', 5000);
  // The peers the new main and the other backup list, at every turn of the loop, until only the one that
  // came back is left.
  const seen: number[][] = [[], []];
  await until('the departed peers to be dropped on both', () => {
    for (const [k, i] of [1, 2].entries()) if (seen[k]!.at(-1) !== listed(i)) seen[k]!.push(listed(i));
    return listed(1) === 1 && listed(2) === 1;
  }, leaseMs + 15_000, 0);
  for (const [k, who] of ['the new main', 'the backup'].entries()) {
    const steps = seen[k]!;
    t.ok(steps.filter((n) => n > 1 && n < departed + 1).length >= 4, `${who} dropped them in steps (peers listed: ${steps.join(' → ')})`);
    t.ok(steps.every((n, i) => i === 0 || steps[i - 1]! - n <= 2 * SWEEP_SLICE), `${who} never applied more than a slice or two of ${SWEEP_SLICE} at once`);
  }
  t.equal(fleet.trackerAt(1).cluster.role, 'primary', 't1 kept command through the sweep');
});

t.test('after a takeover, the sweep waits while clients are still in their TLS handshakes with the new main, though none is back yet', async (t) => {
  const leaseMs = 1200;
  const { ports, fleet, peer: mk } = await sweepCluster(t, leaseMs);
  mk([addr(ports[0]!)], 'gone.bin'); // knows only t0: it never reaches the new main
  const names = (): string[] => fleet.trackerAt(1).state.search('', 100).hits.map((h) => h.name);
  await until('the file on the backup', () => names().length === 1);

  await fleet.stopMember(0);
  await until('t1 to take over', () => fleet.trackerAt(1).cluster.role === 'primary', 5000);
  const takeoverAt = Date.now();
  // A client that starts its TLS handshake and says no more, as one of a crowd still waiting its turn
  // does: t1 holds it until its handshake deadline, past the end of the first lease.
  const arriving = net.connect({ port: ports[1]!, host: '127.0.0.1' });
  arriving.on('error', () => undefined);
  t.teardown(() => arriving.destroy());
  arriving.write(Buffer.from([0x16, 0x03, 0x01]));
  const t1Log = fleet.members[1]!.log;
  await until('the sweep to wait for the crowd', () => t1Log.find((l) => String(l.msg).includes('more are coming') && l.arriving === true), 3 * leaseMs);
  t.same(names(), ['gone.bin'], 'nothing dropped while a client was still in its handshake');
  await until('the peer that never came back to be dropped', () => names().length === 0, 8 * leaseMs);
  t.ok(Date.now() - takeoverAt >= 2 * leaseMs - 100, `dropped only a lease after the crowd was gone (${Date.now() - takeoverAt} ms after the takeover)`);
});

t.test('after a takeover, the sweep waits while peers are still coming back: a late one keeps its files, one that never comes is dropped', async (t) => {
  const leaseMs = 1200;
  const { ports, fleet, peer: mk } = await sweepCluster(t, leaseMs, 50);
  // Two peers reach t1 only through relays that refuse connections until the test opens them: one right
  // after the takeover (within the first lease), one only once the sweep has seen that and waited.
  const road = async (): Promise<TcpProxy> => {
    const p = new TcpProxy(ports[1]!);
    await p.listen(new Set(ports));
    t.teardown(() => p.close());
    p.set('drop');
    return p;
  };
  const soonRoad = await road();
  const slowRoad = await road();
  mk([addr(ports[0]!)], 'gone.bin'); // knows only t0: it never reaches the new main
  mk(ports.map(addr), 'early.bin');
  const soon = mk([addr(ports[0]!), addr(soonRoad.port)], 'soon.bin');
  const late = mk([addr(ports[0]!), addr(slowRoad.port)], 'late.bin');
  const names = (): string[] => fleet.trackerAt(1).state.search('', 100).hits.map((h) => h.name).sort();
  await until('every file on the backup', () => names().length === 4);

  await fleet.stopMember(0);
  await until('t1 to take over', () => fleet.trackerAt(1).cluster.role === 'primary', 5000);
  soonRoad.set('pass');
  await until('a peer to come back after the takeover', () => soon.state === 'connected' && soon.role === 'primary', 5000);
  const t1Log = fleet.members[1]!.log;
  await until('the sweep to see a peer come back and wait a lease more', () => t1Log.some((l) => String(l.msg).includes('more are coming')), 4 * leaseMs);
  slowRoad.set('pass');
  await until('the late peer to be served by t1', () => late.state === 'connected' && late.role === 'primary', 5000);
  await until('the peer that never came back to be dropped', () => names().length === 3, 8 * leaseMs);
  t.same(names(), ['early.bin', 'late.bin', 'soon.bin'], 'the peer that came back late keeps its file; the one that never came is gone');
  const drops = t1Log.filter((l) => String(l.msg).startsWith('dropping '));
  t.same(drops.map((l) => l.peers), [1], 'one sweep dropped one peer: the late one was never dropped and written again');
});

/** Moves `clock` in 10 ms steps, letting real socket I/O run between the steps. */
async function pump(clock: VirtualClock, ms: number, stop?: () => boolean): Promise<void> {
  for (let i = 0; i < ms / 10 && !stop?.(); i++) {
    clock.advance(10);
    await new Promise((r) => setTimeout(r, 2));
  }
}

t.test('on a virtual clock: a backup takes over from a silent main (its links stalled) only once failover-ms has passed without a heartbeat', async (t) => {
  const ports = await reservePorts(2);
  const clock = new VirtualClock();
  const fleet = await clusterOn(t, ports, { clock }, true);
  await fleet.startMember(0);
  await fleet.startMember(1);
  await pump(clock, 5000, () => fleet.converged(0));
  t.ok(fleet.converged(0), 't0 main, t1 in sync');

  fleet.link(0, [1], 'stall');
  const stoppedAt = clock.now();
  await pump(clock, FAILOVER_MS - HEARTBEAT_MS - 20);
  t.not(fleet.trackerAt(1).cluster.role, 'primary', `no takeover ${clock.now() - stoppedAt} ms (virtual) after the main went silent`);
  await pump(clock, 2 * HEARTBEAT_MS + 40, () => fleet.trackerAt(1).cluster.role === 'primary');
  t.equal(fleet.trackerAt(1).cluster.role, 'primary', `takeover ${clock.now() - stoppedAt} ms (virtual) after the main went silent`);
  t.ok(clock.now() - stoppedAt <= FAILOVER_MS + HEARTBEAT_MS + 20, 'within failover-ms and one heartbeat period');
});

t.test('on a virtual clock: a main that stopped (its port refuses connections) is replaced once it has missed two heartbeats, not failover-ms', async (t) => {
  const ports = await reservePorts(2);
  const clock = new VirtualClock();
  const fleet = await clusterOn(t, ports, { clock });
  await fleet.startMember(0);
  await fleet.startMember(1);
  await pump(clock, 5000, () => fleet.converged(0));
  t.ok(fleet.converged(0), 't0 main, t1 in sync');

  await fleet.stopMember(0);
  const stoppedAt = clock.now();
  await pump(clock, HEARTBEAT_MS - 20);
  t.not(fleet.trackerAt(1).cluster.role, 'primary', `no takeover ${clock.now() - stoppedAt} ms (virtual) after the main stopped: a heartbeat could still come`);
  await pump(clock, 3 * HEARTBEAT_MS, () => fleet.trackerAt(1).cluster.role === 'primary');
  t.equal(fleet.trackerAt(1).cluster.role, 'primary', `takeover ${clock.now() - stoppedAt} ms (virtual) after the main stopped`);
  t.ok(clock.now() - stoppedAt < FAILOVER_MS - HEARTBEAT_MS, `before failover-ms (${FAILOVER_MS}) of silence`);
});

t.test('a peer told of a new main moves to it without being left without a session, and the main lists it', async (t) => {
  const leaseMs = 1500;
  const { ports, fleet, peer } = await sweepCluster(t, leaseMs);
  await fleet.stopMember(0);
  await until('t1 to take over', () => fleet.trackerAt(1).cluster.role === 'primary', 10_000);
  const c = peer(ports.map(addr), 'moving.bin');
  await until('the peer announced on t1, the main', () => c.current === label(ports[1]!) && fleet.trackerAt(1).state.search('moving', 10).hits.length === 1, 10_000);
  const states: string[] = [];
  c.on('state', (s: string) => states.push(s));
  // t0 comes back, copies t1's state and takes command back; t1 tells its peers, which move (within 1 s).
  await fleet.startMember(0);
  await until('the peer on t0, the main again', () => c.current === label(ports[0]!) && fleet.trackerAt(0).cluster.role === 'primary', 20_000);
  t.same(states, [], 'its session never ended: it kept t1 until the one with t0 was up (before: connected -> connecting -> connected)');
  // Nothing to wait for but time: the new session must keep its heartbeats, or the main closes it as idle
  // after a lease and drops the peer's files (the old session's end once stopped them).
  await new Promise((resolve) => setTimeout(resolve, 2 * leaseMs));
  t.same(states, [], `its session with the main is still up ${2 * leaseMs} ms later, two leases`);
  const body = await c.request('SEARCH', { text: 'moving', limit: 10 }, 'SEARCH_RESULT');
  t.same(body.files.map((f) => f.name), ['moving.bin'], 'and the main answers with its file');
});

t.test('a peer keeps a standby session with the next tracker: when the main dies that session is in use at once (no gap, no handshake) and the new main lists its file; at the takeback the session it leaves becomes the standby', async (t) => {
  const leaseMs = 1500;
  const { ports, fleet, peer } = await sweepCluster(t, leaseMs);
  const c = peer(ports.map(addr), 'standby.bin', { standbySpreadMs: 0 });
  await until('the peer on t0 with its file listed, and a standby session with t1', () => c.current === label(ports[0]!) && c.standbyAddress === label(ports[1]!) && fleet.trackerAt(0).state.search('standby', 10).hits.length === 1, 10_000);
  const standbyConn = c.standby!.conn;
  t.equal(c.standby!.leaseMs, leaseMs, 'the backup told its standby session --lease-ms as its lease (pinged every 0.6 of it)');
  t.equal(c.leaseMs, 900, 'the main told the session in use the heartbeat lease');
  const states: string[] = [];
  const sessions: string[] = [];
  c.on('state', (s: string) => states.push(s));
  c.on('session', (l: string) => sessions.push(l));

  await fleet.stopMember(0);
  t.equal(c.current, label(ports[1]!), 'the moment t0 is gone, the session in use is the one with t1');
  t.equal(c.conn, standbyConn, 'the standby session itself: no new connection, no handshake');
  // Reads go on while t1 is still a backup (it answers from its copy), before any takeover.
  const early = await c.request('SEARCH', { text: 'standby', limit: 10 }, 'SEARCH_RESULT');
  t.same(early.files.map((f) => f.name), ['standby.bin'], 'a search right after the kill is answered');
  await until('t1 to take over and list the file as the main', () => fleet.trackerAt(1).cluster.role === 'primary' && c.role === 'primary', 10_000);
  await until('its file listed by the new main after the lease passed', async () => {
    const r = await c.request('SEARCH', { text: 'standby', limit: 10 }, 'SEARCH_RESULT');
    return r.files.length === 1;
  }, 5000);
  await new Promise((resolve) => setTimeout(resolve, 2 * leaseMs));
  t.same(states, [], 'its session never ended (before: connected -> connecting -> connected, after a handshake with t1)');
  t.same(sessions, [label(ports[1]!)], 'one new session in use: t1');
  await until('the new main to tell the session the heartbeat lease', () => c.leaseMs === 900, 3000);
  t.equal(fleet.trackerAt(1).state.search('standby', 10).hits.length, 1, 'two leases after the takeover, t1 still lists the file: its heartbeats go on');

  // The takeback: t0 returns and takes command; the peer moves to it and keeps the session with t1 as the standby.
  await fleet.startMember(0);
  await until('the peer on t0, the main again, with t1 as its standby', () => c.current === label(ports[0]!) && fleet.trackerAt(0).cluster.role === 'primary' && c.standbyAddress === label(ports[1]!), 20_000);
  t.equal(c.standby!.conn, standbyConn, 'the standby is the session it had with t1, kept since the start');
  t.equal(standbyConn.listenerCount('event'), 1, 'with one listener of ours, though it was the session in use in between');
  t.same(states, [], 'still no gap');
  // It was told the heartbeat lease while t1 was main; t1, a backup again, tells it --lease-ms at its next PING.
  await until('t1 to tell its standby --lease-ms again', () => c.standby?.leaseMs === leaseMs, 3000);
  t.pass(`the standby is pinged at a standby's pace again (every 0.6 of ${leaseMs} ms), not the main's`);
  await new Promise((resolve) => setTimeout(resolve, 2 * leaseMs));
  t.equal(c.standby?.conn, standbyConn, `and t1 keeps it open two leases later (${2 * leaseMs} ms): its slow heartbeats are enough`);
  t.equal(fleet.trackerAt(0).state.search('standby', 10).hits.length, 1, 't0 lists the file');
});

t.test('in a fleet large enough to stretch the heartbeat lease, standby sessions open over four of its leases: after a takeover they do not all come to the next tracker within 5 s', async (t) => {
  // 3 PINGs a second for the whole fleet: one peer is enough to stretch the lease (3 x 334 ms).
  const { ports, fleet, peer } = await sweepCluster(t, 10_000, undefined, 3, { peerHeartbeatsPerSecond: 3 });
  const started = Date.now();
  const c = peer(ports.map(addr), 'spread.bin', { standbySpreadMs: 100, random: () => 0.999 });
  await until('the peer on t0, the main', () => c.current === label(ports[0]!) && c.role === 'primary', 10_000);
  const leaseMs = c.leaseMs;
  t.equal(leaseMs, 1002, 'the main told a lease stretched for its fleet');
  await until('a standby session with t1', () => c.standbyAddress === label(ports[1]!), 10_000);
  t.ok(Date.now() - started >= 0.9 * 4 * leaseMs, `opened after ${Date.now() - started} ms, not within the 100 ms of standbySpreadMs`);

  const killed = Date.now(); // before the stop: the promotion, and the standby's timer, come during it
  await fleet.stopMember(0);
  t.equal(c.current, label(ports[1]!), 'the standby is in use at once');
  await until('t1 to take over, and a standby session with t2', () => fleet.trackerAt(1).cluster.role === 'primary' && c.standbyAddress === label(ports[2]!), 15_000);
  t.ok(Date.now() - killed >= 0.9 * 4 * leaseMs, `after the takeover, the next standby opened within ${Date.now() - killed} ms of the stop: over four heartbeat leases again, not 100 ms`);
});

t.test('a standby left with a worse-ranked tracker moves to the returning main, and the acting main hands command back only once that main has it: the takeback is a promotion, no handshake', async (t) => {
  const leaseMs = 1500;
  // No straggler allowed: the acting main waits for the peer's standby at t0 (for up to 20 s).
  const { ports, fleet, peer } = await sweepCluster(t, leaseMs, undefined, 3, { takebackStragglers: 0, takebackWaitMs: 20_000 });
  // The peer's log (debug and up), shown if a wait below times out.
  const lines: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line.trim()) });
  const c = peer(ports.map(addr), 'upgrade.bin', { standbySpreadMs: 0, standbyUpgradeMs: 400, logger });
  await until('the peer on t0 with a standby session with t1', () => c.current === label(ports[0]!) && c.standbyAddress === label(ports[1]!), 10_000);
  await fleet.stopMember(0);
  await until('the peer on t1, the main, with its standby on t2 (t0 is down)', () => c.current === label(ports[1]!) && c.role === 'primary' && c.standbyAddress === label(ports[2]!), 10_000);
  const states: string[] = [];
  c.on('state', (s: string) => states.push(s));

  const mark = fleet.members[1]!.log.length; // t1 may have handed command to t0 once already, at the start
  await fleet.startMember(0);
  await until('the standby to move to t0, better ranked', () => c.standbyAddress === label(ports[0]!), 15_000).catch((err: Error) => {
    throw new Error(`${err.message}; t0 is ${fleet.trackerAt(0).cluster.role}; the peer on ${c.current} (${c.role}), standby ${c.standbyAddress}; its log: ${lines.slice(-15).join('\n')}`);
  });
  const atT0 = c.standby!.conn;
  await until('t0 to take command back', () => fleet.trackerAt(0).cluster.role === 'primary', 10_000);
  await until('the peer on t0', () => c.current === label(ports[0]!) && c.role === 'primary', 5000);
  t.equal(c.conn, atT0, 'the session in use at t0 is the standby it moved there before the takeback: no handshake at the takeback');
  t.same(states, [], 'and no gap');
  await until('the session left with t1 to be the standby again', () => c.standbyAddress === label(ports[1]!), 5000);
  const handover = fleet.members[1]!.log.slice(mark).find((l) => String(l.msg).includes('handing command over'));
  t.match(String(handover?.msg), /has sessions from 1 peers \(this main 1\)/, 't1 handed command over once t0 had the peer\'s session');
  t.equal(fleet.trackerAt(0).state.search('upgrade', 10).hits.length, 1, 't0 lists the file');
});

t.test('a main waits at most --takeback-wait-ms for a returning tracker to gather its peers: a peer that keeps no standby does not hold the takeback up for ever', async (t) => {
  const leaseMs = 1500;
  const waitMs = 1500;
  const { ports, fleet, peer } = await sweepCluster(t, leaseMs, undefined, 2, { takebackStragglers: 0, takebackWaitMs: waitMs });
  const c = peer(ports.map(addr), 'nostandby.bin', { standby: false, moveSpreadMs: 100 });
  await until('the peer on t0', () => c.current === label(ports[0]!) && c.role === 'primary', 10_000);
  await fleet.stopMember(0);
  await until('the peer on t1, the main', () => c.current === label(ports[1]!) && c.role === 'primary', 10_000);

  const mark = fleet.members[1]!.log.length; // t1 may have handed command to t0 once already, at the start
  await fleet.startMember(0);
  await until('t0 to take command back', () => fleet.trackerAt(0).cluster.role === 'primary', 15_000);
  const log = fleet.members[1]!.log.slice(mark);
  const waiting = log.find((l) => String(l.msg).includes('has sessions from 0 of this main\'s 1 peers'));
  const handover = log.find((l) => String(l.msg).includes('handing command over'));
  t.ok(waiting, 't1 said it waits for t0 to gather the peers\' sessions');
  t.ok(handover && waiting && Number(handover.time) - Number(waiting.time) >= waitMs, `and handed command over ${Number(handover?.time) - Number(waiting?.time)} ms later, not before ${waitMs}`);
  t.match(String(handover?.msg), /waited for \d+ ms/, 'saying it waited');
  await until('the peer on t0, by a handshake', () => c.current === label(ports[0]!) && c.role === 'primary', 10_000);
  t.pass('the peer moved to t0');
});

t.test('a session that was never a standby (opened by a handshake as the one in use) and is left as the standby at a takeback is told --lease-ms too', async (t) => {
  const leaseMs = 1500;
  const { ports, fleet, peer } = await sweepCluster(t, leaseMs);
  await fleet.stopMember(0);
  await until('t1 to take over', () => fleet.trackerAt(1).cluster.role === 'primary', 10_000);
  const c = peer(ports.map(addr), 'direct.bin', { standbySpreadMs: 0 });
  await until('the peer on t1, the main, by a handshake of its own (t0 refuses)', () => c.current === label(ports[1]!) && c.role === 'primary', 10_000);
  const direct = c.conn;
  t.equal(c.leaseMs, 900, 'told the heartbeat lease by the main');
  await fleet.startMember(0);
  await until('the peer on t0, the main again, with t1 as its standby', () => c.current === label(ports[0]!) && fleet.trackerAt(0).cluster.role === 'primary' && c.standbyAddress === label(ports[1]!), 20_000);
  t.equal(c.standby!.conn, direct, 'the standby is the session it opened with t1 as its main');
  await until('t1, a backup, to tell that standby --lease-ms', () => c.standby?.leaseMs === leaseMs, 3000);
  t.pass('pinged at a standby\'s pace (before: every 0.6 of 900 ms for good; its HELLO did not say it could be a standby)');
});

t.test('a peer whose session with a live main ends (the main closed it) is on its standby at once, then goes back to the main its standby names and announces there', async (t) => {
  const { ports, fleet, peer } = await sweepCluster(t, 1500, undefined, 3);
  const c = peer(ports.map(addr), 'back.bin', { standbySpreadMs: 0, moveSpreadMs: 100 });
  await until('the peer on t0 with its file listed, and a standby session with t1', () => c.current === label(ports[0]!) && c.standbyAddress === label(ports[1]!) && fleet.trackerAt(0).state.search('back', 10).hits.length === 1, 10_000);
  const listed = (): number => fleet.trackerAt(0).state.search('back', 10).hits.length;
  const sessions: string[] = [];
  c.on('session', (l: string) => sessions.push(l));
  // The main closes the session (as after an idle timeout): it drops the peer's files.
  const main = fleet.trackerAt(0) as unknown as { peerSessions: Map<string, { conn: { close(): void } }> };
  for (const s of main.peerSessions.values()) s.conn.close();
  await until('the peer back on t0 with its file listed again', () => c.current === label(ports[0]!) && c.role === 'primary' && listed() === 1 && sessions.length === 2, 10_000);
  t.same(sessions, [label(ports[1]!), label(ports[0]!)], 'on its standby, t1, first; then back on t0 (before the fix it stayed on the backup, its REGISTERs refused for ever)');
  t.equal(fleet.trackerAt(0).cluster.role, 'primary', 't0 was main all along');
  await until('a standby again (t1)', () => c.standbyAddress === label(ports[1]!), 5000);
});

t.test('a peer on a backup is told when that backup follows a new main: its standby (not the tracker that took over) sends it on within a moment', async (t) => {
  const { ports, fleet, peer } = await sweepCluster(t, 1500, undefined, 3);
  // Listed with t2 before t1: its standby is t2, which is not next in command.
  // Its standby sessions open 2 s after a session (so after the takeover, not before t1 is main: t1 would
  // then tell it itself); moves within 100 ms.
  const c = peer([addr(ports[0]!), addr(ports[2]!), addr(ports[1]!)], 'told.bin', { standbySpreadMs: 2000, moveSpreadMs: 100, random: () => 0.999 });
  await until('the peer on t0 with a standby session with t2', () => c.current === label(ports[0]!) && c.standbyAddress === label(ports[2]!) && fleet.trackerAt(0).state.search('told', 10).hits.length === 1, 10_000);
  await fleet.stopMember(0);
  t.equal(c.current, label(ports[2]!), 'on t2, its standby, the moment t0 is gone');
  await until('t1 to take over', () => fleet.trackerAt(1).cluster.role === 'primary', 10_000);
  const mainAt = Date.now();
  await until('the peer on t1 with its file listed', () => c.current === label(ports[1]!) && c.role === 'primary' && fleet.trackerAt(1).state.search('told', 10).hits.length === 1, 10_000);
  const tookMs = Date.now() - mainAt;
  t.ok(tookMs < 2000, `on the new main ${tookMs} ms after it took command (t2 told it; before, the peer learned it only by its REGISTERs refused for 6 s)`);
});

t.test('a backup tells its peer sessions of a new main it follows (TRACKER_CHANGED), whether or not its own role changed', async (t) => {
  const ports = await reservePorts(3);
  const fleet = await clusterOn(t, ports);
  for (let i = 0; i < 3; i++) await fleet.startMember(i);
  await until('a main and backups in sync', () => fleet.converged(0));
  const s = await peerHandshake(ports[2]!);
  t.teardown(() => s.conn.close());
  const told: string[] = [];
  s.conn.on('event', (name: string, body: { primary: string }) => {
    if (name === 'TRACKER_CHANGED') told.push(body.primary);
  });
  await fleet.stopMember(0);
  await until('t1 to take over', () => fleet.trackerAt(1).cluster.role === 'primary', 10_000);
  await until('t2 to name t1 to its session', () => told.includes(label(ports[1]!)), 3000);
  t.equal(fleet.trackerAt(2).cluster.role, 'backup', 't2 is a backup, following t1');
});

t.test('a peer whose move to a new main fails (its handshake queue is full) tries again, keeping its session meanwhile: no gap', async (t) => {
  const { ports, fleet, peer } = await sweepCluster(t, 1500);
  await fleet.stopMember(0);
  await until('t1 to take over', () => fleet.trackerAt(1).cluster.role === 'primary', 10_000);
  const c = peer(ports.map(addr), 'retry.bin', { standby: false, moveSpreadMs: 100 });
  await until('the peer on t1, the main, with its file listed', () => c.current === label(ports[1]!) && fleet.trackerAt(1).state.search('retry', 10).hits.length === 1, 10_000);
  // The first session it opens with t0 fails, as one that waited out a crowded handshake queue would.
  const failed: string[] = [];
  const client = c as unknown as { open: (a: Address, helloMs?: number) => Promise<unknown> };
  const open = client.open.bind(c);
  client.open = (a: Address, helloMs?: number) => {
    if (a.port === ports[0] && failed.length === 0) {
      failed.push(label(a.port));
      return Promise.reject(new RemoteError('P2P_CONNECT_FAILED', 'cannot connect: ECONNRESET'));
    }
    return open(a, helloMs);
  };
  const states: string[] = [];
  c.on('state', (s: string) => states.push(s));
  await fleet.startMember(0);
  await until('the peer on t0, the main again, its file listed there', () => c.current === label(ports[0]!) && fleet.trackerAt(0).cluster.role === 'primary' && fleet.trackerAt(0).state.search('retry', 10).hits.length === 1, 20_000);
  t.same(failed, [label(ports[0]!)], 'its first move failed');
  t.same(states, [], 'and it kept its session with t1 until the next one was up (before: connected -> connecting -> connected)');
});

t.test('a backup tells a standby session (HELLO feature 0x02) --lease-ms and keeps it through three of them of silence; a plain session is closed after one', async (t) => {
  const leaseMs = 1000;
  const { ports } = await sweepCluster(t, leaseMs);
  const open = async (features: number): Promise<{ conn: Connection; leaseMs: number; closed: () => string | undefined }> => {
    const conn = await dial({ host: '127.0.0.1', port: ports[1]! }, { connectTimeoutMs: 1000, requestTimeoutMs: 3000, tls: tlsAs(generateKeyPair().keys) });
    t.teardown(() => conn.close());
    let why: string | undefined;
    const at = Date.now();
    conn.on('close', (err?: { code: string; message: string }) => (why = `${err?.code ?? 'closed'} ${err?.message} after ${Date.now() - at} ms`));
    const welcome = await clientHandshake(conn, 1, 3000, features);
    return { conn, leaseMs: welcome.leaseMs, closed: () => why };
  };
  const standby = await open(PEER_FEATURES.lease | PEER_FEATURES.standby);
  const plain = await open(PEER_FEATURES.lease);
  t.equal(standby.leaseMs, leaseMs, 'the standby session is told --lease-ms');
  t.ok(plain.leaseMs < leaseMs, `a session in use is told the heartbeat lease (${plain.leaseMs} ms)`);
  await until('the plain session to be closed as idle', () => plain.closed(), 3 * leaseMs);
  t.match(plain.closed(), /^P2P_IDLE_TIMEOUT/, `closed as idle (${plain.closed()})`);
  await new Promise((resolve) => setTimeout(resolve, leaseMs));
  t.equal(standby.closed(), undefined, 'the standby session is still open after two leases of silence');
  await until('the standby to be closed at last', () => standby.closed(), 3 * leaseMs);
  t.match(standby.closed(), /^P2P_IDLE_TIMEOUT no traffic for 3000 ms/, `closed as idle after three leases (${standby.closed()})`);
});

t.test('a main that becomes a backup again (a takeback) keeps a standby session through three leases of silence, as a backup does from its HELLO', async (t) => {
  const leaseMs = 1000;
  const { ports, fleet } = await sweepCluster(t, leaseMs);
  await fleet.stopMember(0);
  await until('t1 to take over', () => fleet.trackerAt(1).cluster.role === 'primary', 5000);
  const conn = await dial({ host: '127.0.0.1', port: ports[1]! }, { connectTimeoutMs: 1000, requestTimeoutMs: 3000, tls: tlsAs(generateKeyPair().keys) });
  t.teardown(() => conn.close());
  let closed: string | undefined;
  conn.on('close', (err?: { code: string; message: string }) => (closed = `${err?.code ?? 'closed'} ${err?.message}`));
  const welcome = await clientHandshake(conn, 1, 3000, PEER_FEATURES.lease | PEER_FEATURES.standby);
  t.ok(welcome.leaseMs < leaseMs, `told the heartbeat lease by t1 as main (${welcome.leaseMs} ms)`);
  // Kept open with heartbeats while t0 comes back and takes command; silent from then on.
  const pings = setInterval(() => void conn.request('PING', {}, 'PONG', { timeoutMs: 1000 }).catch(() => undefined), 200);
  t.teardown(() => clearInterval(pings));
  await fleet.startMember(0);
  await until('t0 to take command back, t1 a backup again', () => fleet.trackerAt(0).cluster.role === 'primary' && fleet.trackerAt(1).cluster.role !== 'primary', 20_000);
  clearInterval(pings);
  const silentAt = Date.now();
  await new Promise((resolve) => setTimeout(resolve, 2 * leaseMs + 300));
  t.equal(closed, undefined, 'still open after two leases of silence: t1 now gives it the standby limit');
  await until('the session to be closed as idle at last', () => closed, 3 * leaseMs);
  t.match(closed, /^P2P_IDLE_TIMEOUT no traffic for 3000 ms/, `closed after three leases (${closed}, ${Date.now() - silentAt} ms after the last PING)`);
});

t.test('without a standby session (standby: false) a peer whose main dies reconnects to the backup, as before', async (t) => {
  const { ports, fleet, peer } = await sweepCluster(t, 1500);
  const c = peer(ports.map(addr), 'plain.bin', { standby: false });
  await until('the peer on t0 with its file listed', () => c.current === label(ports[0]!) && fleet.trackerAt(0).state.search('plain', 10).hits.length === 1, 10_000);
  const states: string[] = [];
  c.on('state', (s: string) => states.push(s));
  await fleet.stopMember(0);
  await until('the peer on t1, the new main', () => c.current === label(ports[1]!) && c.role === 'primary' && c.state === 'connected', 10_000);
  t.same(states, ['connecting', 'connected'], 'a gap while it dialled t1');
  t.equal(c.standbyAddress, undefined, 'and no standby session');
});

t.test('a peer whose first tracker is a backup has a session there at once, then moves to the main it names and announces there', async (t) => {
  const leaseMs = 1500;
  const { ports, fleet, peer } = await sweepCluster(t, leaseMs);
  const sessions: string[] = [];
  const c = peer([addr(ports[1]!), addr(ports[0]!)], 'redirected.bin');
  c.on('session', (label: string) => sessions.push(label));
  await until('the peer on t0, the main, with its file listed', () => c.current === label(ports[0]!) && fleet.trackerAt(0).state.search('redirected', 10).hits.length === 1, 10_000);
  t.same(sessions, [label(ports[1]!), label(ports[0]!)], 'a session with the backup first (reads work there while it waits its turn at the main), then the main');
  t.equal(c.state, 'connected', 'connected throughout');
  await new Promise((resolve) => setTimeout(resolve, 2 * leaseMs));
  t.same(sessions, [label(ports[1]!), label(ports[0]!)], `and still on the main two leases later (${2 * leaseMs} ms): its heartbeats go on`);
  t.equal(fleet.trackerAt(0).state.search('redirected', 10).hits.length, 1, 'with its file listed');
});
