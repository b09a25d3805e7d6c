/**
 * The chunk server's upload buffers (issue 10): no connection holds more than half of them, and a freed
 * buffer goes to the waiting connection that holds the fewest, so one that stops reading cannot starve
 * the others.
 */
import t from 'tap';
import { UploadSlots } from '../../peerd/upload-slots.js';
import { track, turn } from '../helpers/net.js';

t.test('one connection alone gets half of the buffers; the rest wait for a connection that holds fewer', async (t) => {
  const slots = new UploadSlots<string>(8, 16);
  t.equal(slots.maxPerOwner, 4);
  const greedy = Array.from({ length: 10 }, () => track(slots.acquire('greedy')));
  await turn();
  t.equal(greedy.filter((g) => g.state === 'resolved').length, 4, 'the greedy connection gets 4 of 8 at once');
  t.equal(slots.inUse, 4, 'the other 4 stay free for others');
  const polite = Array.from({ length: 4 }, () => track(slots.acquire('polite')));
  await turn();
  t.equal(polite.filter((p) => p.state === 'resolved').length, 4, 'another connection gets them at once');
  t.equal(slots.inUse, 8);

  // A buffer freed by the greedy connection goes back to it only if no one with fewer waits.
  const more = track(slots.acquire('polite'));
  slots.release('polite', polite[0]!.value!);
  await turn();
  t.equal(more.state, 'resolved', "the polite connection's own release serves its next request");
  t.equal(slots.heldBy('greedy'), 4, 'the greedy one still holds its 4 and no more');
  const third = track(slots.acquire('third'));
  slots.release('greedy', greedy[0]!.value!);
  await turn();
  t.equal(third.state, 'resolved', 'a freed buffer goes to the connection holding none, before the greedy one that holds 3');
  t.equal(slots.heldBy('greedy'), 3);
  t.equal(greedy.filter((g) => g.state === 'resolved').length, 4, 'its waiting requests still wait');
});

t.test('connections that hold as many take turns; a dropped connection gets nothing more', async (t) => {
  const slots = new UploadSlots<string>(2, 16);
  t.equal(slots.maxPerOwner, 1);
  const a = [track(slots.acquire('a')), track(slots.acquire('a'))];
  const b = [track(slots.acquire('b')), track(slots.acquire('b'))];
  await turn();
  t.same([a[0]!.state, a[1]!.state, b[0]!.state, b[1]!.state], ['resolved', 'pending', 'resolved', 'pending']);
  const c = track(slots.acquire('c'));
  slots.release('a', a[0]!.value!);
  await turn();
  t.equal(a[1]!.state, 'resolved', 'a waited longest among those holding none');
  t.equal(c.state, 'pending');
  slots.drop('b');
  await turn();
  t.equal(b[1]!.state, 'resolved', "a dropped connection's waiting request is settled");
  t.equal(b[1]!.value, undefined, 'without a buffer');
  slots.release('b', b[0]!.value!);
  await turn();
  t.equal(c.state, 'resolved', 'and its buffer goes to the next in turn');
  t.equal(slots.inUse, 2);
});
