/**
 * daemon/state.ts: the state hash that compares trackers (admin status) is the same whether it is taken in
 * one go or a slice at a time between turns of the event loop, and the sliced one lets the loop run.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { HolderTable } from '../../daemon/holders.js';
import { TrackerState } from '../../daemon/state.js';
import { Store } from '../../daemon/store.js';

t.test('stateHashInSlices hashes what stateHash does, over many turns of the loop', async (t) => {
  const state = new TrackerState(new Store(':memory:'));
  t.teardown(() => state.store.close());
  for (let p = 0; p < 300; p++) {
    const peer = { peerId: randomBytes(20).toString('hex'), publicKey: randomBytes(32).toString('hex'), host: `10.0.${p >> 8}.${p & 255}`, port: 7000 + p };
    const files = Array.from({ length: 20 }, (_, i) => ({ id: randomBytes(32).toString('hex'), size: i + 1, name: `file ${p}-${i}.bin`, complete: i % 3 !== 0 }));
    state.holders.register(peer, files);
  }
  const whole = state.stateHash();
  let turns = 0;
  let counting = true;
  const count = (): void => {
    if (!counting) return;
    turns++;
    setImmediate(count);
  };
  setImmediate(count);
  const sliced = await state.stateHashInSlices(0);
  counting = false;
  t.equal(sliced, whole, 'the same digest');
  t.ok(turns > 100, `the loop went round ${turns} times meanwhile`);
  state.holders.unregister(state.holders.canonicalOrder()[0]!, 'all');
  t.not(await state.stateHashInSlices(), whole, 'and a change shows');
  t.equal(await state.stateHashInSlices(), state.stateHash(), 'the two agree again on the new state');
});

t.test('a hash asked again while nothing changed is the one already taken; any change, in the table or the log, takes a new one', async (t) => {
  const state = new TrackerState(new Store(':memory:'));
  t.teardown(() => state.store.close());
  const peer = (p: number) => ({ peerId: randomBytes(20).toString('hex'), publicKey: randomBytes(32).toString('hex'), host: `10.1.0.${p}`, port: 7000 + p });
  const files = () => Array.from({ length: 5 }, (_, i) => ({ id: randomBytes(32).toString('hex'), size: i + 1, name: `f${i}.bin`, complete: true }));
  for (let p = 0; p < 20; p++) state.holders.register(peer(p), files());
  let walks = 0;
  // Counted on every table: installing a snapshot replaces the state's table with another.
  const canonicalOrder = HolderTable.prototype.canonicalOrder;
  HolderTable.prototype.canonicalOrder = function (this: HolderTable) {
    walks++;
    return canonicalOrder.call(this);
  };
  t.teardown(() => {
    HolderTable.prototype.canonicalOrder = canonicalOrder;
  });
  /** The whole hash in one go, to compare with, not counted as a walk. */
  const wholeHash = (): string => {
    const before = walks;
    const h = state.stateHash();
    walks = before;
    return h;
  };
  const [a, b] = await Promise.all([state.stateHashInSlices(), state.stateHashInSlices()]);
  const c = await state.stateHashInSlices();
  t.equal(walks, 1, 'three asks (two at once, one after) walked the table once');
  t.ok(a === b && b === c, 'and got the same digest');
  state.holders.register(peer(99), files());
  const d = await state.stateHashInSlices();
  t.equal(walks, 2, 'a registration takes a new one');
  t.equal(d, wholeHash(), "which is the new state's");
  state.apply({ index: state.appliedIndex + 1, term: 1, op: { op: 'blacklist-add', entry: { target: 'a'.repeat(40), reason: 'test', since: 1, addedBy: 'admin' } } });
  const e = await state.stateHashInSlices();
  t.equal(walks, 3, 'and so does a write applied from the log');
  t.not(e, d, 'with its own digest');
  t.equal(e, wholeHash());

  // A snapshot installed at the same index (as a backup that is sent one can be), of a state with no holders.
  const other = new TrackerState(new Store(':memory:'));
  t.teardown(() => other.store.close());
  const records = other.snapshotRecords(1);
  records[0] = { ...records[0]!, index: state.appliedIndex, term: 1 } as (typeof records)[number];
  state.install(records);
  t.not(await state.stateHashInSlices(), e, 'a snapshot installed takes a new one too, even at the same index');
  t.equal(walks, 4);
});
