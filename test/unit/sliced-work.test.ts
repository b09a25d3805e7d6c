/**
 * daemon/sliced-work.ts: CPU-heavy work (a report's receipt checks) runs a few units per event-loop turn,
 * in turn between jobs, within a bounded queue, so that a lookup or a heartbeat waits at most one slice.
 */
import t from 'tap';
import { SlicedWork } from '../../daemon/sliced-work.js';
import { P2PError } from '../../protocol/index.js';

/** A job of `units` units that counts them in `done`, and returns `value`. */
function* job<T>(units: number, done: { n: number }, value: T): Generator<void, T> {
  for (let i = 0; i < units; i++) {
    done.n++;
    yield;
  }
  return value;
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

t.test('no turn of the event loop runs more than unitsPerTurn units', async (t) => {
  const work = new SlicedWork({ unitsPerTurn: 8, maxQueuedUnits: 1000 });
  const done = { n: 0 };
  const result = work.run(100, job(100, done, 'checked'));
  const seen: number[] = [];
  while (done.n < 100) {
    await nextTurn();
    seen.push(done.n);
  }
  t.equal(await result, 'checked', 'the job resolves with what it returns');
  const perTurn = seen.map((n, i) => n - (seen[i - 1] ?? 0));
  t.ok(perTurn.every((n) => n <= 8), `at most 8 units between two turns (${perTurn.join(' ')})`);
  t.ok(seen.length >= 100 / 8, `the work took ${seen.length} turns`);
});

t.test('a small job is not held up behind a large one', async (t) => {
  const work = new SlicedWork({ unitsPerTurn: 4, maxQueuedUnits: 10_000 });
  const large = { n: 0 };
  const small = { n: 0 };
  const big = work.run(1000, job(1000, large, 'large'));
  const quick = work.run(3, job(3, small, 'small'));
  t.equal(await quick, 'small');
  t.ok(large.n <= 12, `the small job finished after ${large.n} units of the large one (units are taken in turn)`);
  t.equal(await big, 'large');
});

t.test('the queue is bounded, a failing job fails alone, and stop refuses what waits', async (t) => {
  const work = new SlicedWork({ unitsPerTurn: 4, maxQueuedUnits: 100 });
  const done = { n: 0 };
  const first = work.run(80, job(80, done, 1));
  t.equal(work.queued, 80, 'the units declared are queued');
  t.notOk(work.canTake(21), 'more than the queue holds is not taken');
  await t.rejects(work.run(21, job(21, done, 2)), { code: 'P2P_RATE_LIMITED' }, 'and is refused at once with P2P_RATE_LIMITED');
  const failing = work.run(5, (function* () {
    yield;
    throw new P2PError('P2P_BAD_EVIDENCE', 'a forged receipt');
  })());
  await t.rejects(failing, { code: 'P2P_BAD_EVIDENCE' }, 'a job that throws rejects its own promise');
  t.equal(await first, 1, 'the others carry on');
  t.equal(work.queued, 0, 'nothing is left queued');

  const waiting = work.run(50, job(50, done, 3));
  work.stop(new P2PError('P2P_SHUTTING_DOWN', 'closing'));
  await t.rejects(waiting, { code: 'P2P_SHUTTING_DOWN' }, 'stop refuses the jobs waiting');
  await t.rejects(work.run(1, job(1, done, 4)), { code: 'P2P_SHUTTING_DOWN' }, 'and every new one');
});
