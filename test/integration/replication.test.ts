/**
 * Tracker replication under real faults, on real tracker processes on loopback: kill -9 of the main
 * during concurrent writes (several rounds), SIGSTOP past the failover time and SIGCONT, the main coming
 * back and retaking command, and every tracker killed and restarted. Checked in the manner of Jepsen's
 * set test: writers add distinct blacklist entries and file registrations while the fault runs; a write
 * that fails or times out is "unknown", not "failed"; afterwards every acknowledged write must be on
 * every tracker, nothing that was never attempted may be, and all trackers' state hashes must agree.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { AdminClient } from '../../cli/admin.js';
import { silentLogger, toP2PError, type Body } from '../../protocol/index.js';
import { TrackerClient } from '../../peerd/tracker-client.js';
import { reservePorts, until } from '../helpers/wait.js';
import { clientIdentity, peerSession } from '../helpers/tls.js';
import { TRACKER_BIN, TrackerCluster, type MainSighting, type TrackerProcess } from '../helpers/tracker-process.js';
import type { Tap } from '../helpers/tap.js';

const HEARTBEAT_MS = 100;
const FAILOVER_MS = 500;

function newCluster(t: Tap, size: number): Promise<TrackerCluster> {
  return TrackerCluster.create(t, { size, heartbeatMs: HEARTBEAT_MS, failoverMs: FAILOVER_MS });
}

/** The state hash of every tracker seen. */
const hashes = (seen: MainSighting): Set<string> => new Set([...seen.rows.values()].map((r) => r.hash));

/** The names of every file a tracker lists, read over a peer session with that very tracker. */
async function filesOn(port: number): Promise<Set<string>> {
  const conn = await peerSession(port);
  try {
    const res = await conn.request('SEARCH', { text: '', limit: 100_000 }, 'SEARCH_RESULT');
    return new Set(res.files.map((f) => f.name));
  } finally {
    conn.close();
  }
}

/** Jepsen-style writers: what was attempted, and what was acknowledged. */
class Writers {
  readonly attemptedTargets = new Set<string>();
  readonly ackedTargets = new Set<string>();
  readonly attemptedFiles = new Set<string>();
  readonly ackedFiles = new Set<string>();
  readonly clients: TrackerClient[] = [];
  private running = true;
  private readonly loops: Array<Promise<void>> = [];

  constructor(private readonly cluster: TrackerCluster) {}

  start(blacklistWriters: number, fileWriters: number): void {
    for (let w = 0; w < blacklistWriters; w++) this.loops.push(this.blacklistLoop(w));
    const trackers = this.cluster.trackers.map((tr) => ({ host: '127.0.0.1', port: tr.port }));
    for (let w = 0; w < fileWriters; w++) {
      const files: Body<'REGISTER'>['files'] = [];
      const client = new TrackerClient({ trackers, ...clientIdentity(), advertisePort: () => 20_000 + w, announce: () => files, logger: silentLogger, retryMs: 3000 });
      client.start();
      this.clients.push(client);
      this.loops.push(this.fileLoop(w, client, files));
    }
  }

  private async blacklistLoop(w: number): Promise<void> {
    let i = 0;
    let next = 0; // which tracker to send to: move on after a failure
    while (this.running) {
      const target = `10.${w + 1}.${(i >> 8) & 255}.${i & 255}`;
      i++;
      const tr = this.cluster.trackers[next % this.cluster.trackers.length]!;
      this.attemptedTargets.add(target);
      try {
        await tr.admin.withSession((c) => c.add(target, `writer ${w}`));
        this.ackedTargets.add(target);
      } catch {
        next++; // unknown: it may or may not have been applied
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 3));
    }
  }

  private async fileLoop(w: number, client: TrackerClient, files: Body<'REGISTER'>['files']): Promise<void> {
    let i = 0;
    while (this.running) {
      const name = `w${w}-${i++}.bin`;
      const f = { id: randomBytes(32), size: 1000 + i, name, complete: true };
      files.push(f); // re-announced on every reconnection, acknowledged or not
      this.attemptedFiles.add(name);
      try {
        await client.request('REGISTER', { files: [f] }, 'OK');
        this.ackedFiles.add(name);
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 3));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  async closeClients(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.close()));
  }
}

/** The set check on one tracker: every acknowledged write there, nothing never attempted. */
async function checkSets(t: Tap, writers: Writers, tr: TrackerProcess): Promise<void> {
  const present = new Set(await tr.admin.blacklist());
  const lostTargets = [...writers.ackedTargets].filter((x) => !present.has(x));
  const unexpectedTargets = [...present].filter((x) => !writers.attemptedTargets.has(x));
  t.same(lostTargets, [], `${tr.name}: no acknowledged blacklist entry lost (${writers.ackedTargets.size} acknowledged, ${present.size} present)`);
  t.same(unexpectedTargets, [], `${tr.name}: no blacklist entry that was never written`);
  const files = await filesOn(tr.port);
  const lostFiles = [...writers.ackedFiles].filter((x) => !files.has(x));
  const unexpectedFiles = [...files].filter((x) => !writers.attemptedFiles.has(x));
  t.same(lostFiles, [], `${tr.name}: no acknowledged registration lost (${writers.ackedFiles.size} acknowledged)`);
  t.same(unexpectedFiles, [], `${tr.name}: no registration that was never made`);
}

t.test('kill -9 the main during concurrent writes, three rounds: nothing acknowledged is lost, states agree, durable state survives killing every tracker', async (t) => {
  const cluster = await newCluster(t, 2);
  const [a, b] = cluster.trackers as [TrackerProcess, TrackerProcess];
  a.start();
  b.start();
  await cluster.converged(cluster.trackers, { main: a }); // the first tracker of --cluster main, with an in-sync backup

  const writers = new Writers(cluster);
  writers.start(2, 2);
  await until('writes to be acknowledged', () => writers.ackedTargets.size >= 10 && writers.ackedFiles.size >= 10);

  const takeovers: number[] = [];
  for (let round = 1; round <= 3; round++) {
    const { main } = await cluster.oneMain(cluster.trackers, { deadlineMs: 10_000 });
    const other = main === a ? b : a;
    const ackedBefore = writers.ackedTargets.size + writers.ackedFiles.size;
    const killedAt = Date.now();
    await main.kill9();
    await until(`${other.name} to take over`, async () => (await other.admin.self()).role === 'primary', 5000, 10);
    const ms = Date.now() - killedAt;
    takeovers.push(ms);
    t.ok(ms <= FAILOVER_MS + 1000, `round ${round}: ${other.name} took over ${ms} ms after the main was killed (failover-ms ${FAILOVER_MS})`);
    await until('writes to go on on the new main', () => writers.ackedTargets.size + writers.ackedFiles.size >= ackedBefore + 10);
    main.start();
    await cluster.converged(cluster.trackers, { main: a }); // it comes back, copies the state and takes command back
  }
  t.comment(`takeover after kill -9: ${takeovers.join(', ')} ms`);

  await writers.stop();
  t.ok(writers.ackedTargets.size > 30 && writers.ackedFiles.size > 30, `writes went through (${writers.ackedTargets.size} entries, ${writers.ackedFiles.size} files)`);
  // Wait until every writer's files are registered again with the main and copied to the backup.
  await until('every acknowledged registration on every tracker', async () => {
    if (!(await cluster.converged(cluster.trackers, { main: a, deadlineMs: 0 }).catch(() => false))) return false;
    for (const tr of cluster.trackers) {
      const files = await filesOn(tr.port);
      if ([...writers.ackedFiles].some((f) => !files.has(f))) return false;
    }
    return true;
  });
  for (const tr of cluster.trackers) await checkSets(t, writers, tr);
  const rows = await cluster.converged(cluster.trackers, { main: a });
  t.equal(hashes(rows).size, 1, 'every tracker has the same state hash');
  await writers.closeClients();

  // Kill every tracker, then start them again: the durable state is all there.
  const termBefore = rows.rows.get(rows.main)!.term;
  await Promise.all(cluster.trackers.map((tr) => tr.kill9()));
  for (const tr of cluster.trackers) tr.start();
  const after = await cluster.converged(); // the cluster comes back
  t.ok(after.rows.get(after.main)!.term > termBefore, 'a new term after the restart');
  for (const tr of cluster.trackers) {
    const present = new Set(await tr.admin.blacklist());
    t.same([...writers.ackedTargets].filter((x) => !present.has(x)), [], `${tr.name}: every acknowledged blacklist entry survived killing every tracker`);
  }
});

t.test('SIGSTOP the main past failover-ms, then SIGCONT: it steps down, its old-term write does not stick, and it takes command back', async (t) => {
  const cluster = await newCluster(t, 2);
  const [a, b] = cluster.trackers as [TrackerProcess, TrackerProcess];
  a.start();
  b.start();
  await cluster.converged(cluster.trackers, { main: a }); // a main and an in-sync backup
  await a.admin.withSession((c) => c.add('10.9.0.1', 'before the pause'));
  const oldTerm = (await a.admin.self()).term;
  const toPaused = await AdminClient.connect(a.address, cluster.token); // connected before the pause
  t.teardown(() => toPaused.close());

  const stoppedAt = Date.now();
  a.pause();
  await until('the backup to take over', async () => (await b.admin.self()).role === 'primary', 5000, 10);
  t.comment(`takeover after SIGSTOP: ${Date.now() - stoppedAt} ms`);
  const newTerm = (await b.admin.self()).term;
  t.ok(newTerm > oldTerm, 'the backup took over in a newer term');
  await b.admin.withSession((c) => c.add('10.9.0.2', 'during the pause'));

  // A write sent to the paused main waits in its socket; it is the first thing it sees on waking.
  const stale = toPaused.add('10.9.0.66', 'sent to the paused main').then(
    () => 'acknowledged',
    (err: unknown) => toP2PError(err).code,
  );
  await new Promise((r) => setTimeout(r, 100));
  a.resume();
  const outcome = await stale;
  t.not(outcome, 'acknowledged', `the paused main refused the write it found on waking (${outcome})`);
  a.admin.close();

  await cluster.converged(cluster.trackers, { main: a }); // the old main takes command back
  const changes = a.roleChanges();
  const stepDown = changes.findIndex((c) => c.from === 'primary' && c.term >= oldTerm);
  t.ok(stepDown >= 0, 'the old main logged stepping down after SIGCONT');
  t.ok(changes.slice(stepDown).some((c) => c.to === 'primary' && c.term > newTerm), 'it took command again only in a term newer than the takeover');
  for (const tr of cluster.trackers) {
    const targets = await tr.admin.blacklist();
    t.ok(targets.includes('10.9.0.1') && targets.includes('10.9.0.2'), `${tr.name}: the writes before and during the pause are there`);
    t.notOk(targets.includes('10.9.0.66'), `${tr.name}: the write sent to the paused main did not stick`);
  }
  const rows = await cluster.converged(cluster.trackers, { main: a });
  t.equal(hashes(rows).size, 1, 'both trackers have the same state hash');
});

t.test('a paused backup holds up one write for at most failover-ms, then is left behind and copies the state again when it wakes', async (t) => {
  const cluster = await newCluster(t, 2);
  const [a, b] = cluster.trackers as [TrackerProcess, TrackerProcess];
  a.start();
  b.start();
  await cluster.converged(cluster.trackers, { main: a }); // a main and an in-sync backup
  const add = (target: string): Promise<unknown> => a.admin.withSession((c) => c.add(target, 'while the backup sleeps'));
  b.pause();
  let started = Date.now();
  await add('10.8.0.1');
  const firstMs = Date.now() - started;
  t.ok(firstMs <= FAILOVER_MS + 500, `the first write waited ${firstMs} ms for the paused backup, then went on (failover-ms ${FAILOVER_MS})`);
  started = Date.now();
  for (let i = 2; i <= 5; i++) await add(`10.8.0.${i}`);
  const laterMs = (Date.now() - started) / 4;
  t.ok(laterMs < FAILOVER_MS / 2, `later writes do not wait for it (${laterMs.toFixed(1)} ms each)`);
  t.equal((await a.admin.self()).role, 'primary', 'the main keeps command');
  const trackers = await a.admin.status();
  t.equal(trackers.find((r) => r.address === b.address)?.reachable, false, 'admin status shows the backup unreachable');

  b.resume();
  const rows = await cluster.converged(cluster.trackers, { main: a }); // the backup copies the state again
  t.equal(hashes(rows).size, 1, 'same state hash on both');
  t.same(await b.admin.blacklist(), ['10.8.0.1', '10.8.0.2', '10.8.0.3', '10.8.0.4', '10.8.0.5'], 'the backup has every write made while it slept');
});

t.test('a tracker whose --listen is not in --cluster refuses to start (exit 2)', async (t) => {
  const [p1, p2, p3] = await reservePorts(3);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-repl-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const proc = spawn(process.execPath, [TRACKER_BIN, '--listen', `127.0.0.1:${p1}`, '--cluster', `127.0.0.1:${p2},127.0.0.1:${p3}`, '--data', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const code = await new Promise((r) => proc.once('exit', r));
  t.equal(code, 2, 'exit code 2');
  t.match(err, /is not in --cluster/, 'the message says what is wrong');
  t.equal(err.trim().split('\n').length, 1, 'on one line');
});
