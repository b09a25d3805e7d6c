/**
 * Messages between trackers stay bounded however large the state: a snapshot of a big blacklist goes in
 * parts, and records handed over for a merge go in batches, each under MAX_BATCH_BYTES (issue 9: one
 * SYNC_STATE or MERGE frame used to carry everything, so a large state could never sync or merge).
 */
import t from 'tap';
import type { Op } from '../../daemon/ops.js';
import { MAX_BATCH_BYTES, type RaftMessage } from '../../daemon/raft/messages.js';
import { RaftNode } from '../../daemon/raft/node.js';
import { TrackerState } from '../../daemon/state.js';
import { Store } from '../../daemon/store.js';

const HEARTBEAT_MS = 50;
const FAILOVER_MS = 250;
const BANS = Number(process.env.BANS ?? 12_000);

class Pair {
  now = 0;
  connected = false;
  /** The link's speed each way, in bytes per ms (Infinity: every message arrives at once). */
  bytesPerMs = Infinity;
  /** When each side's link has written out everything sent on it. */
  private readonly wireFreeAt = [0, 0];
  readonly nodes: RaftNode[] = [];
  readonly stores: Store[] = [];
  readonly sizes: Array<{ t: string; bytes: number }> = [];
  private queue: Array<{ to: number; from: number; m: RaftMessage; at: number }> = [];

  constructor() {
    for (let rank = 0; rank < 2; rank++) this.boot(rank, new Store(':memory:'));
  }

  boot(rank: number, store: Store): void {
    this.stores[rank] = store;
    this.nodes[rank] = new RaftNode({
      rank,
      size: 2,
      state: new TrackerState(store),
      heartbeatMs: HEARTBEAT_MS,
      failoverMs: FAILOVER_MS,
      random: () => 0.5,
      now: this.now,
      send: (to, m) => {
        const bytes = JSON.stringify(m).length;
        this.sizes.push({ t: m.t, bytes });
        if (!this.connected) return;
        const at = Math.max(this.now, this.wireFreeAt[rank]!) + bytes / this.bytesPerMs;
        this.wireFreeAt[rank] = at;
        this.queue.push({ to, from: rank, m, at });
      },
      unsent: () => Math.max(0, this.wireFreeAt[rank]! - this.now) * this.bytesPerMs || 0,
    });
  }

  /** Runs virtual time forward, delivering every message at once. */
  run(ms: number, until?: () => boolean): void {
    const end = this.now + ms;
    while (this.now < end) {
      this.now += HEARTBEAT_MS / 4;
      for (const n of this.nodes) n.tick(this.now);
      for (let guard = 0; this.queue.length > 0 && guard < 100_000; guard++) {
        const next = this.queue.findIndex((q) => q.at <= this.now);
        if (next < 0) break;
        const { to, from, m } = this.queue.splice(next, 1)[0]!;
        this.nodes[to]!.receive(this.now, from, m);
      }
      if (until?.()) return;
    }
  }

  main(): RaftNode | undefined {
    return this.nodes.find((n) => n.isPrimary);
  }
}

const ban = (i: number, side: string): Op => ({ op: 'blacklist-add', entry: { target: `10.${side}.${(i >> 8) & 255}.${i & 255}`, reason: 'a reason long enough to make every record weigh something', since: i, addedBy: 'test' } });

t.test(`a snapshot of ${BANS} bans reaches a fresh tracker in parts, each about ${MAX_BATCH_BYTES} bytes at most`, (t) => {
  const pair = new Pair();
  pair.run(2 * FAILOVER_MS, () => !!pair.main()); // each alone: both take over in their own terms
  const main = pair.nodes[0]!;
  t.ok(main.isPrimary, 'rank 0 acts alone');
  for (let i = 0; i < BANS; i++) main.propose(ban(i, '1'));
  t.equal(main.commit, main.log.lastIndex, 'acting alone, every write is committed at once');
  t.ok(main.log.start.index > 0, `the applied log was folded into the state (log starts after index ${main.log.start.index})`);
  // Rank 1 comes back with a wiped disk and meets the main.
  pair.stores[1]!.close();
  pair.boot(1, new Store(':memory:'));
  pair.connected = true;
  pair.sizes.length = 0;
  pair.run(20 * FAILOVER_MS, () => pair.nodes[1]!.role === 'backup' && pair.nodes[1]!.commit === main.commit);
  const parts = pair.sizes.filter((s) => s.t === 'snapshot');
  t.ok(parts.length > 1, `the snapshot went in ${parts.length} parts`);
  const largest = Math.max(...pair.sizes.map((s) => s.bytes));
  t.ok(largest < MAX_BATCH_BYTES * 1.25, `the largest message was ${largest} bytes`);
  const [a, b] = pair.nodes.map((n) => (n as unknown as { state: TrackerState }).state);
  t.equal(b!.blacklistEntries().length, BANS, 'the copy holds every ban');
  t.equal(b!.stateHash(), a!.stateHash(), 'and the same state');
  t.end();
});

t.test(`${BANS} bans written on one side of a split reach the other as a merge in batches`, (t) => {
  const pair = new Pair();
  pair.run(2 * FAILOVER_MS, () => pair.nodes.every((n) => n.isPrimary));
  t.ok(pair.nodes.every((n) => n.isPrimary), 'split apart, both act alone (the two-tracker trade-off)');
  const [a, b] = pair.nodes as [RaftNode, RaftNode];
  for (let i = 0; i < 10; i++) a.propose(ban(i, '1'));
  for (let i = 0; i < BANS; i++) b.propose(ban(i, '2'));
  t.ok(a.term > b.term, `rank 0's term (${a.term}) is the newer one: rank 1 will give up its state`);
  pair.connected = true;
  pair.sizes.length = 0;
  const states = pair.nodes.map((n) => (n as unknown as { state: TrackerState }).state);
  pair.run(40 * FAILOVER_MS, () => !b.hasPendingMerge && a.isPrimary && b.commit === a.commit && states.every((s) => s.appliedIndex === a.commit));
  const merges = pair.sizes.filter((s) => s.t === 'merge');
  t.ok(merges.length > 1, `the records went in ${merges.length} merge batches`);
  const largest = Math.max(...pair.sizes.map((s) => s.bytes));
  t.ok(largest < MAX_BATCH_BYTES * 1.25, `the largest message was ${largest} bytes`);
  for (const [i, s] of states.entries()) t.equal(s.blacklistEntries().length, BANS + 10, `rank ${i} holds every ban acknowledged on either side`);
  t.equal(states[0]!.stateHash(), states[1]!.stateHash(), 'and both hold the same state');
  t.notOk(b.hasPendingMerge, 'nothing is left waiting to be merged');
  t.end();
});

t.test('a snapshot streamed while holder writes go on: the backup ends with exactly the main\'s state', (t) => {
  const pair = new Pair();
  pair.run(2 * FAILOVER_MS, () => !!pair.main());
  const main = pair.nodes[0]!;
  let serial = 0;
  const peer = (p: number) => ({ peerId: p.toString(16).padStart(40, '0'), publicKey: 'ab'.repeat(32), host: `10.9.${p >> 8}.${p & 255}`, port: 7000 + (p % 1000) });
  const files = (p: number, n: number) => Array.from({ length: n }, () => ({ id: (++serial).toString(16).padStart(64, '0'), size: serial, name: `peer ${p} file ${serial} with a name long enough to weigh.bin`, complete: serial % 3 !== 0 }));
  for (let p = 0; p < 300; p++) main.propose({ op: 'register', peer: peer(p), files: files(p, 40) });
  pair.stores[1]!.close();
  pair.boot(1, new Store(':memory:'));
  pair.connected = true;
  pair.bytesPerMs = 2000; // a 512 KB part takes a quarter of a second: writes land between parts
  pair.sizes.length = 0;
  const backup = pair.nodes[1]!;
  let writesDuringSnapshot = 0;
  for (let step = 0; step < 400 && !(backup.role === 'backup' && backup.commit === main.commit && step > 40); step++) {
    const streaming = pair.sizes.some((x) => x.t === 'snapshot') && backup.role !== 'backup';
    const p = step % 320; // some of these peers are new
    const op: Op = step % 4 === 0 ? { op: 'drop-peer', peerId: peer((p * 7) % 300).peerId } : step % 4 === 1 ? { op: 'unregister', peerId: peer(p).peerId, ids: 'all' } : { op: 'register', peer: peer(p), files: files(p, 5) };
    main.propose(op);
    if (streaming) writesDuringSnapshot++;
    pair.run(HEARTBEAT_MS);
  }
  pair.run(40 * FAILOVER_MS, () => backup.role === 'backup' && backup.commit === main.commit && backup.log.lastIndex === main.log.lastIndex);
  const parts = pair.sizes.filter((x) => x.t === 'snapshot').length;
  t.ok(parts > 3, `the snapshot went in ${parts} parts`);
  t.ok(writesDuringSnapshot > 5, `${writesDuringSnapshot} holder writes were made while it was on its way`);
  const [a, b] = pair.nodes.map((n) => (n as unknown as { state: TrackerState }).state);
  t.equal(b!.appliedIndex, a!.appliedIndex, 'the backup applied everything the main did');
  t.equal(b!.stateHash(), a!.stateHash(), 'and holds the same holder lists, though each was read when the stream reached it');
  t.end();
});

t.test('over a slow link the main sends each batch once, not a new copy every heartbeat while one is on its way', (t) => {
  const pair = new Pair();
  pair.connected = true;
  pair.run(4 * FAILOVER_MS, () => pair.nodes[0]!.isPrimary && pair.nodes[1]!.role === 'backup');
  const [main, backup] = pair.nodes as [RaftNode, RaftNode];
  t.ok(main.isPrimary && backup.role === 'backup', 'rank 0 leads, rank 1 follows');
  // About 175 ms on the wire for a full batch: longer than the two heartbeats after which an unanswered
  // batch counts as lost, shorter than failover-ms.
  pair.bytesPerMs = 4500;
  const writes = 4000;
  for (let i = 0; i < writes; i++) main.propose(ban(i, '3'));
  pair.sizes.length = 0;
  const sent: string[] = [];
  const send = (main as unknown as { o: { send: (to: number, m: RaftMessage) => void } }).o.send;
  (main as unknown as { o: { send: (to: number, m: RaftMessage) => void } }).o.send = (to, m) => {
    if (m.t === 'append' && m.entries.length > 0) sent.push(`${m.prev.index}+${m.entries.length}`);
    send(to, m);
  };
  pair.run(40 * FAILOVER_MS, () => backup.commit === main.log.lastIndex && main.commit === main.log.lastIndex);
  t.equal(main.commit, main.log.lastIndex, `all ${writes} writes committed`);
  t.ok(sent.length > 1, `the entries went in ${sent.length} batches`);
  t.same([...new Set(sent)], sent, `no batch went twice (${sent.join(', ')})`);
  t.end();
});
