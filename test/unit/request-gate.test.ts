/**
 * daemon/request-gate.ts: peers' requests run in stretches of at most budgetMs, in the order they came,
 * and the event loop's timers (the cluster's heartbeats) run between stretches however many wait.
 */
import t from 'tap';
import { RequestGate } from '../../daemon/request-gate.js';

/** A gate on a clock that only the work moves: each request "costs" `costMs`. */
function setup(budgetMs: number, costMs: number) {
  let now = 0;
  const gate = new RequestGate({ budgetMs, now: () => now });
  const ran: number[] = [];
  const request = (n: number) => () => {
    ran.push(n);
    now += costMs;
  };
  return { gate, ran, request };
}

t.test('a burst runs a stretch at once, the rest after the loop has run its timers, in order', async (t) => {
  const { gate, ran, request } = setup(15, 5);
  let timerFiredAfter = -1;
  setTimeout(() => (timerFiredAfter = ran.length), 0);
  const settled = Array.from({ length: 10 }, (_, n) => gate.run(request(n)));
  t.same(ran, [0, 1, 2], 'three 5 ms requests fit in a 15 ms stretch; the others wait');
  t.equal(gate.queued, 7);
  await Promise.all(settled);
  t.same(ran, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'every request ran, in the order it came');
  t.ok(timerFiredAfter >= 3 && timerFiredAfter < 10, `a timer due meanwhile ran between stretches (after ${timerFiredAfter} requests)`);
  t.equal(gate.deferred, 7, 'the deferred count says how many waited');
  t.equal(gate.queued, 0);
});

t.test('a request that comes while others wait goes after them, even in a fresh stretch', async (t) => {
  const { gate, ran, request } = setup(10, 10);
  const first = [gate.run(request(0)), gate.run(request(1)), gate.run(request(2))];
  t.same(ran, [0]);
  await new Promise<void>((resolve) => setImmediate(resolve)); // one stretch later: request 1 ran
  const late = gate.run(request(3));
  await Promise.all([...first, late]);
  t.same(ran, [0, 1, 2, 3]);
});

t.test('a waiting request settles as its work does: value, rejection, throw', async (t) => {
  const { gate, request } = setup(1, 5);
  gate.run(request(0)); // uses up the stretch
  const ok = gate.run(async () => undefined);
  const rejected = gate.run(() => Promise.reject(new Error('no such file')));
  const thrown = gate.run(() => {
    throw new Error('bad request');
  });
  await t.resolves(Promise.resolve(ok));
  await t.rejects(Promise.resolve(rejected), /no such file/);
  await t.rejects(Promise.resolve(thrown), /bad request/);
});

t.test('an idle gate runs each request at once, and a new stretch starts after each turn', async (t) => {
  const { gate, ran, request } = setup(15, 5);
  for (let turn = 0; turn < 5; turn++) {
    t.equal(gate.run(request(turn)), undefined, 'ran synchronously, no promise');
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  t.same(ran, [0, 1, 2, 3, 4]);
  t.equal(gate.deferred, 0);
});

t.test('stop fails every waiting request', async (t) => {
  const { gate, ran, request } = setup(5, 5);
  gate.run(request(0));
  const waiting = [gate.run(request(1)), gate.run(request(2))];
  gate.stop(new Error('tracker is shutting down'));
  for (const w of waiting) await t.rejects(Promise.resolve(w), /shutting down/);
  t.same(ran, [0], 'nothing ran after stop');
});
