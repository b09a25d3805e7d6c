/**
 * daemon/state.ts: the state hash that compares trackers (admin status) is the same whether it is taken in
 * one go or a slice at a time between turns of the event loop, and the sliced one lets the loop run.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
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
