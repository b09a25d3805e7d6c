/**
 * daemon/state.ts: a snapshot is taken at once but read out a record at a time as its parts go out, and
 * installed a part at a time as they arrive. What a backup ends with must not depend on either: the
 * records read late are the state at the snapshot's index, and the state being replaced keeps answering,
 * unchanged, until the last part is in.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import type { SnapshotRecord } from '../../daemon/ops.js';
import { TrackerState } from '../../daemon/state.js';
import { Store } from '../../daemon/store.js';

function fresh(t: Test): TrackerState {
  const state = new TrackerState(new Store(':memory:'));
  t.teardown(() => state.store.close());
  return state;
}

let index = 0;
function peer(p: number): { peerId: string; publicKey: string; host: string; port: number } {
  return { peerId: p.toString(16).padStart(40, '0'), publicKey: 'cd'.repeat(32), host: `10.2.${p >> 8}.${p & 255}`, port: 7000 + p };
}
function files(n: number, size: (i: number) => number): Array<{ id: string; size: number; name: string; complete: boolean }> {
  return Array.from({ length: n }, (_, i) => ({ id: randomBytes(32).toString('hex'), size: size(i), name: `shared ${i}.bin`, complete: i % 4 !== 0 }));
}
function register(state: TrackerState, p: number, regs: ReturnType<typeof files>): void {
  state.apply({ index: ++index, term: 1, op: { op: 'register', peer: peer(p), files: regs } });
}

t.test('records read out after later writes are the state at the moment the snapshot was taken', (t) => {
  const main = fresh(t);
  for (let p = 0; p < 40; p++) register(main, p, files(30, (i) => 1000 + p * 100 + i));
  main.apply({ index: ++index, term: 1, op: { op: 'blacklist-add', entry: { target: '10.9.9.9', reason: 'test', since: 1, addedBy: 'admin' } } });
  const hashAtSnapshot = main.stateHash();
  const snapshot = main.snapshot(1);

  // Everything after: peers leave (their files' slots are freed and reused by new files of other sizes),
  // others re-register under other names, and a peer's file turns from partial to complete.
  for (let p = 0; p < 20; p++) main.apply({ index: ++index, term: 1, op: { op: 'drop-peer', peerId: peer(p).peerId } });
  for (let p = 100; p < 120; p++) register(main, p, files(30, (i) => 7 + i));
  const held = main.holders.capture().at(0);
  register(main, Number.parseInt(held.peer.peerId, 16), held.files.map((f) => ({ ...f, name: `renamed ${f.name}`, complete: true })));
  main.apply({ index: ++index, term: 1, op: { op: 'blacklist-rm', target: '10.9.9.9', by: 'admin', time: 2 } });
  t.not(main.stateHash(), hashAtSnapshot, 'the main has moved on');

  const records = Array.from({ length: snapshot.length }, (_, i) => snapshot.at(i));
  const copy = fresh(t);
  copy.install(JSON.parse(JSON.stringify(records)) as SnapshotRecord[]);
  t.equal(copy.stateHash(), hashAtSnapshot, 'a copy made from the records read late holds the state as it was when taken');
  t.equal(copy.sizes().holders, 40 * 30, 'every holder entry of then, none of later');
  t.equal(copy.blacklistEntries().length, 1, 'and the ban that was in force then');
  t.end();
});

t.test('installed a part at a time: the state being replaced answers unchanged until the last part, then is the copy', (t) => {
  const main = fresh(t);
  for (let p = 0; p < 60; p++) register(main, p, files(20, (i) => 50 + i));
  const source = main.snapshot(1);
  const records = Array.from({ length: source.length }, (_, i) => source.at(i));

  const backup = fresh(t);
  const oldFiles = files(3, () => 9);
  register(backup, 500, oldFiles);
  const hashBefore = backup.stateHash();
  const install = backup.beginInstall();
  const newFile = records.find((r): r is Extract<SnapshotRecord, { k: 'peer' }> => r.k === 'peer')!.files[0]!.id;
  for (let at = 0; at < records.length; at += 7) {
    install.add(records.slice(at, at + 7));
    if (backup.lookup(newFile) !== undefined || backup.lookup(oldFiles[0]!.id)?.holders.length !== 1) {
      t.fail(`after ${at + 7} records the backup already answered from the copy`);
      return t.end();
    }
  }
  t.equal(backup.stateHash(), hashBefore, 'with every part in but the end not reached, nothing has changed');
  install.finish();
  t.equal(backup.stateHash(), main.stateHash(), 'once finished the backup holds the main\'s state');
  t.equal(backup.lookup(oldFiles[0]!.id), undefined, 'what only the backup had is gone');
  t.equal(backup.lookup(newFile)?.holders.length, 1, "and the main's files are there");
  t.throws(() => install.add(records.slice(0, 1)), 'a finished install takes no more records');
  t.end();
});

t.test('an install left unfinished changes nothing, and one without its header is refused', (t) => {
  const main = fresh(t);
  for (let p = 0; p < 10; p++) register(main, p, files(5, (i) => i + 1));
  const source = main.snapshot(1);
  const records = Array.from({ length: source.length }, (_, i) => source.at(i));
  const backup = fresh(t);
  register(backup, 77, files(4, () => 3));
  const before = backup.stateHash();
  const abandoned = backup.beginInstall();
  abandoned.add(records.slice(0, records.length - 1));
  t.equal(backup.stateHash(), before, 'a snapshot whose last part never came is dropped with nothing changed');
  t.equal(backup.sizes().holders, 4);

  const headless = backup.beginInstall();
  t.throws(() => headless.add(records.slice(1)), { code: 'P2P_MALFORMED' }, 'records before the header are refused');
  t.throws(() => backup.beginInstall().finish(), { code: 'P2P_MALFORMED' }, 'as is an empty snapshot');
  t.equal(backup.stateHash(), before, 'and the state is still as it was');
  t.end();
});

t.test('the state hash of a backup that installed a snapshot is the new state\'s, however its old table changed meanwhile', async (t) => {
  const main = fresh(t);
  for (let p = 0; p < 6; p++) register(main, p, files(2, () => 5));
  const source = main.snapshot(1);
  const records = Array.from({ length: source.length }, (_, i) => source.at(i));
  const backup = fresh(t);
  for (let p = 10; p < 12; p++) register(backup, p, files(2, () => 5));
  const install = backup.beginInstall();
  install.add(records);
  // Writes still applied to the old table while the copy comes in, until it has changed as many times as
  // the copy's table (six registrations) and stands at the snapshot's index: a digest kept by (index,
  // table version) must not take the copy for it.
  for (let p = 12; p < 16; p++) register(backup, p, files(1, () => 5));
  const head = records[0] as Extract<SnapshotRecord, { k: 'head' }>;
  backup.appliedIndex = head.index;
  const old = await backup.stateHashInSlices();
  install.finish();
  t.equal(backup.stateHash(), main.stateHash(), 'the backup holds the copy');
  t.not(await backup.stateHashInSlices(), old, 'and the hash it reports is taken again');
  t.equal(await backup.stateHashInSlices(), main.stateHash(), "it is the copy's");
});
