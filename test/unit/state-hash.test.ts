/**
 * daemon/state.ts: the state hash that compares trackers (admin status) is the same whether it is taken in
 * one go or a slice at a time between turns of the event loop, and the sliced one lets the loop run.
 */
import t from 'tap';
import fc from 'fast-check';
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

t.test("the bans hashed and snapshotted are read from memory: exactly the store's, in its order", (t) => {
  // Targets that sort differently by UTF-16 units and by UTF-8 bytes (a character past U+FFFF against
  // one in U+E000-U+FFFF), equal `since` values, bans lifted and made again, and merged records.
  const target = fc.constantFrom('10.0.0.1', '10.0.0.10', '10.0.0.2', 'a'.repeat(40), 'b'.repeat(40), 'x\u{1f600}', 'x\uffff', 'x\ue000', 'xé', 'x');
  const op = fc.oneof(
    fc.record({ kind: fc.constant('add' as const), target, since: fc.integer({ min: 0, max: 3 }), reason: fc.constantFrom('r', 'другое') }),
    fc.record({ kind: fc.constant('rm' as const), target }),
    fc.record({ kind: fc.constant('merge' as const), target, since: fc.integer({ min: 0, max: 3 }), term: fc.integer({ min: 1, max: 9 }) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
      const state = new TrackerState(new Store(':memory:'));
      try {
        let index = 0;
        for (const o of ops) {
          const at = { index: ++index, term: 1 };
          if (o.kind === 'add') state.apply({ ...at, op: { op: 'blacklist-add', entry: { target: o.target, reason: o.reason, since: o.since, addedBy: 'admin' } } });
          else if (o.kind === 'rm') state.apply({ ...at, op: { op: 'blacklist-rm', target: o.target, by: 'admin', time: index } });
          else state.apply({ ...at, op: { op: 'merge', records: [{ k: 'ban', ban: { target: o.target, reason: 'merged', since: o.since, addedBy: 'other', stamp: [o.term, index] } }] } });
        }
        const stored = JSON.stringify(state.store.bans());
        const byTarget = (a: { target: string }, b: { target: string }): number => (a.target < b.target ? -1 : 1);
        const inSnapshot = state.durableRecords().flatMap((r) => (r.k === 'ban' ? [r.ban] : []));
        return JSON.stringify(state.bans()) === stored && JSON.stringify(inSnapshot.sort(byTarget)) === JSON.stringify(state.store.bans().sort(byTarget));
      } finally {
        state.store.close();
      }
    }),
    { numRuns: 300 },
  );
  t.pass('300 random histories of bans, lifts and merges: the same bans, in the same order, as the store reads them');
  t.end();
});
