/**
 * daemon/request-gate.ts: peers' requests run in stretches of at most budgetMs, and the event loop's timers
 * (the cluster's heartbeats) run between stretches however many wait. In one line they run in the order
 * they came until the oldest has waited lifoAfterMs; the lines share the loop's time by weight, by what their
 * work took; requests other than urgent ones that waited past maxWaitMs are refused unrun.
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

t.test('announcements take turns with lookups: one waiting behind a backlog runs second, not last', async (t) => {
  const { gate, ran, request } = setup(10, 10);
  const all = Array.from({ length: 6 }, (_, n) => gate.run(request(n)));
  const urgent = gate.run(request(100), 'urgent');
  await Promise.all([...all, urgent]);
  t.same(ran, [0, 100, 1, 2, 3, 4, 5], 'the urgent request ran at the first turn after it came');
});

t.test('while both kinds wait they share the time, so neither starves', async (t) => {
  const { gate, ran, request } = setup(10, 10);
  const settled = [gate.run(request(0))];
  for (let n = 1; n <= 3; n++) settled.push(gate.run(request(n)), gate.run(request(100 + n), 'urgent'));
  await Promise.all(settled);
  t.same(ran, [0, 101, 102, 1, 103, 2, 3], 'the lookup run at once counts against its line: two announcements, then one of each in turn');
});

t.test('a lookup that waited past maxWaitMs is refused without running; announcements are never refused', async (t) => {
  let now = 0;
  const gate = new RequestGate({ budgetMs: 10, maxWaitMs: 25, now: () => now, shed: (ms) => new Error(`overloaded after ${ms} ms`) });
  const ran: string[] = [];
  const request = (name: string) => () => {
    ran.push(name);
    now += 10;
  };
  const first = gate.run(request('a'));
  const results = ['b', 'c', 'd', 'e'].map((n) => Promise.resolve(gate.run(request(n))).then(() => 'ran', (err: Error) => err.message));
  const announce = Promise.resolve(gate.run(request('R'), 'urgent')).then(() => 'ran', (err: Error) => err.message);
  await first;
  const outcomes = await Promise.all(results);
  t.equal(await announce, 'ran', 'the announcement ran, though it came last');
  t.same(ran, ['a', 'R', 'b', 'c'], 'work ran only for requests still within their wait (the announcement first: it waited too)');
  t.same(outcomes, ['ran', 'ran', 'overloaded after 30 ms', 'overloaded after 30 ms'], 'the later lookups were refused with the gate owner\'s error, saying how long they waited');
  t.equal(gate.shed, 2, 'and counted');
});

t.test('once the line is backed up, the newest lookups go first and the oldest are the ones refused (adaptive LIFO)', async (t) => {
  let now = 0;
  const gate = new RequestGate({ budgetMs: 10, maxWaitMs: 35, lifoAfterMs: 15, now: () => now, shed: () => new Error('overloaded') });
  const ran: string[] = [];
  const request = (name: string) => () => {
    ran.push(name);
    now += 10;
  };
  const outcome = (p: void | Promise<void>) => Promise.resolve(p).then(() => 'ran', (err: Error) => err.message);
  const settled = [outcome(gate.run(request('a')))]; // runs at once; the clock is now 10
  for (const n of ['b', 'c', 'd', 'e', 'f']) settled.push(outcome(gate.run(request(n))));
  const outcomes = await Promise.all(settled);
  t.same(ran, ['a', 'b', 'c', 'f', 'e'], 'oldest first while the wait was short, then newest first');
  t.same(outcomes, ['ran', 'ran', 'ran', 'overloaded', 'ran', 'ran'], 'the one left waiting longest was refused');
  t.equal(gate.shed, 1);
});

/** A gate on a clock that only the work moves, with requests of the given costs in named lines. */
function costed(budgetMs: number) {
  let now = 0;
  const gate = new RequestGate({ budgetMs, now: () => now });
  const ran: string[] = [];
  const request = (name: string, costMs: number) => () => {
    ran.push(name);
    now += costMs;
  };
  return { gate, ran, request };
}

t.test('lookups sent into a backlog of searches run after at most the search already under way, not after all of them', async (t) => {
  const { gate, ran, request } = costed(10);
  const settled = [gate.run(request('s0', 20), 'heavy')];
  for (let n = 1; n <= 5; n++) settled.push(gate.run(request(`s${n}`, 20), 'heavy'));
  for (let n = 1; n <= 5; n++) settled.push(gate.run(request(`l${n}`, 0.1)));
  await Promise.all(settled);
  t.same(ran, ['s0', 'l1', 'l2', 'l3', 'l4', 'l5', 's1', 's2', 's3', 's4', 's5'], 'the 20 ms search run at once costs its line 20 ms: the lookups, 0.1 ms each, go next');
});

t.test('lines that all stay backed up share the time by weight, not by turns: lookups and announcements 8 times what searches get', async (t) => {
  const { gate, ran, request } = costed(10);
  const settled = [gate.run(request('first', 10))]; // runs at once and fills the stretch: the rest wait
  for (let n = 0; n < 40; n++) settled.push(gate.run(request('search', 10), 'heavy'));
  for (let n = 0; n < 2000; n++) settled.push(gate.run(request('lookup', 1)));
  for (let n = 0; n < 200; n++) settled.push(gate.run(request('register', 10), 'urgent'));
  await Promise.all(settled);
  let searches = 0;
  const tenth = ran.findIndex((r) => r === 'search' && ++searches === 10);
  const before = ran.slice(0, tenth + 1);
  const lookups = before.filter((r) => r === 'lookup').length;
  const registers = before.filter((r) => r === 'register').length;
  // 8 times the searches' 100 ms, less the 10 ms lookup that ran at once, within one search (80 lookups).
  t.ok(Math.abs(lookups + 10 - 800) <= 80, `by the 10th search (100 ms of searches), ${lookups} ms of lookups had run (and 10 ms at once): 8 times the time`);
  t.ok(Math.abs(registers - 80) <= 8, `and ${registers * 10} ms of announcements: 8 times too`);
  t.equal(ran.length, 2241, 'and every request ran');
});

t.test('a line that was idle does not save up time: it starts level with the line that waits', async (t) => {
  const { gate, ran, request } = costed(10);
  const settled = [gate.run(request('first', 1))];
  for (let n = 0; n < 30; n++) settled.push(gate.run(request('search', 10), 'heavy'));
  for (let turn = 0; turn < 20; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
  const before = ran.filter((r) => r === 'search').length;
  t.ok(before >= 10, `searches ran alone for a while (${before})`);
  for (let n = 0; n < 100; n++) settled.push(gate.run(request('lookup', 1)));
  await Promise.all(settled);
  const after = ran.slice(ran.indexOf('lookup'));
  t.ok(after.slice(0, 82).includes('search'), `a search ran within 81 lookups (1 ms each, weight 8 against the searches' 1) of their arrival, not after ${before * 10 * 8} of them`);
});

t.test('once nothing waits, every line starts again from nothing', async (t) => {
  const { gate, ran, request } = costed(5);
  const settled = [gate.run(request('first', 1))];
  for (let n = 0; n < 10; n++) settled.push(gate.run(request('lookup', 5)));
  await Promise.all(settled);
  await new Promise<void>((resolve) => setImmediate(resolve));
  ran.length = 0;
  const next = [gate.run(request('first', 5), 'heavy')];
  next.push(gate.run(request('search', 5), 'heavy'), gate.run(request('lookup', 5)), gate.run(request('search', 5), 'heavy'));
  await Promise.all(next);
  t.same(ran, ['first', 'lookup', 'search', 'search'], "the lookups' 50 ms of the backlog before do not count against them in this one");
});

t.test('searches too are refused once they waited past maxWaitMs, and go newest first in their own line', async (t) => {
  let now = 0;
  const waits: Array<[string, number]> = [];
  const gate = new RequestGate({ budgetMs: 10, maxWaitMs: 35, lifoAfterMs: 15, now: () => now, shed: () => new Error('overloaded'), onLeave: (cls, ms) => waits.push([cls, ms]) });
  const ran: string[] = [];
  const request = (name: string) => () => {
    ran.push(name);
    now += 10;
  };
  const outcome = (p: void | Promise<void>) => Promise.resolve(p).then(() => 'ran', (err: Error) => err.message);
  const settled = [outcome(gate.run(request('a'), 'heavy'))];
  for (const n of ['b', 'c', 'd', 'e', 'f']) settled.push(outcome(gate.run(request(n), 'heavy')));
  const outcomes = await Promise.all(settled);
  t.same(ran, ['a', 'b', 'c', 'f', 'e'], 'oldest first while the wait was short, then newest first');
  t.same(outcomes, ['ran', 'ran', 'ran', 'overloaded', 'ran', 'ran'], 'the one left waiting longest was refused');
  t.same(waits, [['heavy', 0], ['heavy', 0], ['heavy', 10], ['heavy', 20], ['heavy', 30], ['heavy', 40]], 'each told once as it left, with its wait: run at once, run, or refused');
});

t.test('a hook that throws as a request leaves does not strand it', async (t) => {
  let now = 0;
  const gate = new RequestGate({ budgetMs: 5, now: () => now, onLeave: () => {
    throw new Error('metrics broke');
  } });
  const ran: number[] = [];
  const settled = [0, 1, 2].map((n) => gate.run(() => {
    ran.push(n);
    now += 5;
  }));
  await Promise.all(settled);
  t.same(ran, [0, 1, 2], 'every request ran and settled');
});
