/**
 * daemon/broadcast.ts: an event for every peer session is written to a slice of them per turn of the event
 * loop, so that telling 17,000 peers of a new main never holds the loop (and the cluster's heartbeats) for
 * seconds; every session still gets every event, in order, and only the latest main.
 */
import t from 'tap';
import { Broadcaster } from '../../daemon/broadcast.js';

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Sessions 0..n-1 that record the frames written to them. */
function sessions(n: number): Array<{ id: number; got: string[]; open: boolean }> {
  return Array.from({ length: n }, (_, id) => ({ id, got: [], open: true }));
}

function broadcaster(perTurn: number, writes: { n: number }) {
  return new Broadcaster<{ got: string[]; open: boolean }>({
    perTurn,
    deliver: (s, frame) => {
      writes.n++;
      if (s.open) s.got.push(frame.toString());
    },
  });
}

t.test('no turn of the loop writes to more than perTurn sessions, and every session gets the event', async (t) => {
  const writes = { n: 0 };
  const b = broadcaster(100, writes);
  const all = sessions(1000);
  b.send(() => Buffer.from('banned X'), all);
  t.equal(writes.n, 0, 'nothing is written in the call itself');
  const perTurn: number[] = [];
  while (b.pending > 0) {
    const before = writes.n;
    await nextTurn();
    perTurn.push(writes.n - before);
  }
  t.ok(perTurn.every((n) => n <= 100), `at most 100 a turn (${perTurn.join(', ')})`);
  t.equal(perTurn.length, 10, '1,000 sessions take 10 turns');
  t.ok(all.every((s) => s.got.length === 1 && s.got[0] === 'banned X'), 'each session got the event once');
});

t.test('events reach each session in the order they were given, also across slices', async (t) => {
  const writes = { n: 0 };
  const b = broadcaster(7, writes);
  const all = sessions(50);
  b.send(() => Buffer.from('add X'), all);
  await nextTurn();
  b.send(() => Buffer.from('remove X'), all);
  b.send(() => Buffer.from('add Y'), all.slice(0, 10));
  while (b.pending > 0) await nextTurn();
  t.same(all[0]!.got, ['add X', 'remove X', 'add Y'], 'the first session: all three, in order');
  t.same(all[49]!.got, ['add X', 'remove X'], 'the last: the two it was a target of, in order');
  t.ok(all.every((s) => s.got[0] === 'add X' && s.got[1] === 'remove X'), 'never a remove before its add');
});

t.test('a newer event of the same key replaces what an older one has not told yet', async (t) => {
  const writes = { n: 0 };
  const b = broadcaster(10, writes);
  const all = sessions(40);
  b.send(() => Buffer.from('main A'), all, 'main');
  await nextTurn();
  b.send(() => Buffer.from('ban Z'), all);
  b.send(() => Buffer.from('main B'), all, 'main');
  while (b.pending > 0) await nextTurn();
  t.same(all[0]!.got, ['main A', 'ban Z', 'main B'], 'a session told of A before B came is then told of B');
  t.same(all[39]!.got, ['ban Z', 'main B'], 'one not yet told of A hears only of B');
  t.ok(all.every((s) => s.got.includes('ban Z')), 'an event without a key is never dropped');
  t.equal(writes.n, 10 + 40 + 40, 'no write is wasted on the old main');
});

t.test('closed sessions are the deliverer\'s to skip, and stop() drops what waits', async (t) => {
  const writes = { n: 0 };
  const b = broadcaster(5, writes);
  const all = sessions(20);
  all[3]!.open = false;
  b.send(() => Buffer.from('e1'), all);
  await nextTurn();
  t.same(all[3]!.got, [], 'a session closed before its turn gets nothing');
  b.stop();
  await nextTurn();
  await nextTurn();
  t.equal(writes.n, 5, 'nothing more is written after stop()');
  t.equal(b.pending, 0, 'and nothing waits');
  b.send(() => Buffer.from('e2'), all);
  await nextTurn();
  t.equal(writes.n, 5, 'nor is a later event');
});

t.test('an answer waiting with afterQueued goes out after every event given before it, and before later ones', async (t) => {
  const writes = { n: 0 };
  const order: string[] = [];
  const b = new Broadcaster<{ id: number }>({
    perTurn: 10,
    deliver: (s, frame) => {
      writes.n++;
      if (s.id === 0) order.push(frame.toString());
    },
  });
  const all = Array.from({ length: 35 }, (_, id) => ({ id }));
  let answered = false;
  b.afterQueued(() => (answered = true));
  t.ok(answered, 'with nothing waiting, the answer goes at once');
  b.send(() => Buffer.from('ban X'), all);
  b.afterQueued(() => order.push('sync answer'));
  b.send(() => Buffer.from('ban Y'), all);
  while (b.pending > 0) await nextTurn();
  t.same(order, ['ban X', 'sync answer', 'ban Y'], 'the answer between the pushes, as given');
});

t.test('a change can be folded into an event until its first slice; cancel drops what is untold and keeps the order of waiting answers', async (t) => {
  const writes = { n: 0 };
  const b = broadcaster(10, writes);
  const all = sessions(30);
  const changes = ['X'];
  let encoded = 0;
  const told = b.send(() => {
    encoded++;
    return Buffer.from(`ban ${changes.join('+')}`);
  }, all);
  t.notOk(told.started, 'not started before its first slice');
  changes.push('Y');
  await nextTurn();
  t.ok(told.started, 'started once a session has it');
  while (b.pending > 0) await nextTurn();
  t.equal(encoded, 1, 'encoded once for all');
  t.ok(all.every((s) => s.got[0] === 'ban X+Y'), 'every session got the folded change');

  const more = sessions(30);
  b.send(() => Buffer.from('main me'), more, 'main');
  const seen: string[] = [];
  b.afterQueued(() => seen.push('answer'));
  await nextTurn();
  b.cancel('main');
  t.equal(b.pending, 0, 'cancel leaves nothing of it to tell');
  t.same(seen, ['answer'], 'and what waited for it runs');
  t.equal(more.filter((s) => s.got.length > 0).length, 10, 'only the first slice had been told');
});
