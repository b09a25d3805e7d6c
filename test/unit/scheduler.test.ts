import fc from 'fast-check';
import t from 'tap';
import { Scheduler, type SchedulerOptions } from '../../peerd/scheduler.js';

type Peer = { name: string };
const peer = (name: string): Peer => ({ name });
const bits = (n: number, held: number[]): Uint8Array => {
  const b = new Uint8Array(n);
  for (const i of held) b[i] = 1;
  return b;
};
/** Asks `source` for chunks until it gets none or `max` of them. */
const drain = <S>(s: Scheduler<S>, source: S, max = Infinity): number[] => {
  const got: number[] = [];
  for (let i: number | undefined; got.length < max && (i = s.next(source)) !== undefined; ) got.push(i);
  return got;
};
/** A deterministic "random" for the random order: a small linear congruential generator. */
const seeded = (seed: number) => (): number => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed / 2 ** 31;
};
const make = (opts: Partial<SchedulerOptions> & { chunks: number }): Scheduler<Peer> => new Scheduler<Peer>({ order: 'file', ...opts });

t.test('file order: a complete holder gets every chunk once, in order, then nothing', (t) => {
  const s = make({ chunks: 5 });
  const a = peer('a');
  s.addSource(a, undefined);
  t.same(drain(s, a, 3), [0, 1, 2], 'the first three');
  t.equal(s.inFlightAt(a), 3, 'recorded as in flight there');
  t.same(drain(s, a), [3, 4], 'then the rest; no chunk twice from one source, even in the endgame');
  t.equal(s.next(a), undefined);
  t.end();
});

t.test('random order: a permutation of the needed chunks, different per seed, same for the same seed', (t) => {
  const order = (seed: number): number[] => {
    const s = new Scheduler<Peer>({ chunks: 64, order: 'random', random: seeded(seed) });
    const a = peer('a');
    s.addSource(a, undefined);
    return drain(s, a);
  };
  const one = order(1);
  t.same([...one].sort((x, y) => x - y), Array.from({ length: 64 }, (_, i) => i), 'every chunk exactly once');
  t.notSame(one, Array.from({ length: 64 }, (_, i) => i), 'not file order');
  t.notSame(order(2), one, 'another seed, another order (downloaders starting together want different chunks)');
  t.same(order(1), one, 'the same seed, the same order');
  t.end();
});

t.test('a resumed download: chunks already done are never handed out and count as done', (t) => {
  const s = make({ chunks: 6, done: [0, 2, 2, 5, 99] });
  const a = peer('a');
  s.addSource(a, undefined);
  t.equal(s.doneCount, 3, 'duplicates and out-of-range indices ignored');
  t.ok(s.isDone(2) && !s.isDone(1), 'isDone (what swarming serves)');
  t.same(drain(s, a), [1, 3, 4], 'only the missing chunks');
  t.end();
});

t.test('a partial holder gets only chunks it has; a fresher have-bitmap opens more', (t) => {
  const s = make({ chunks: 8 });
  const p = peer('partial');
  const c = peer('complete');
  s.addSource(p, new Uint8Array(0));
  t.equal(s.next(p), undefined, 'nothing before its bitmap arrives');
  s.setHave(p, bits(8, [1, 4, 6]));
  t.same(drain(s, p), [1, 4, 6], 'the queued chunks it has, in queue order');
  s.addSource(c, undefined);
  t.same(drain(s, c, 3), [0, 2, 3], 'a complete holder takes the others');
  s.setHave(p, bits(8, [0, 1, 2, 3, 4, 5, 6, 7]));
  t.same(drain(s, p, 2), [5, 7], 'after a refresh: what is still queued, skipping what was taken meanwhile');
  t.end();
});

t.test('a partial holder that says it lacks a chunk is not asked for it again', (t) => {
  const s = make({ chunks: 4 });
  const p = peer('p');
  s.addSource(p, bits(4, [1, 2]));
  t.equal(s.next(p), 1);
  s.release(p, 1);
  s.lacks(p, 1);
  t.same(drain(s, p), [2], 'chunk 1 is back in the queue but not for this holder');
  const c = peer('c');
  s.addSource(c, undefined);
  t.equal(s.next(c), 1, 'a complete holder gets it first (lost chunks go before the rest of the queue)');
  t.end();
});

t.test('requeue after a loss: a failed request goes back to the queue, ahead of chunks not yet asked for', (t) => {
  const s = make({ chunks: 6 });
  const a = peer('a');
  const b = peer('b');
  s.addSource(a, undefined);
  s.addSource(b, undefined);
  t.same(drain(s, a, 3), [0, 1, 2]);
  s.release(a, 1);
  t.equal(s.inFlightAt(a), 2, 'no longer in flight at a');
  t.equal(s.next(b), 1, 'the lost chunk is asked for first');
  t.equal(s.next(b), 3, 'then the queue goes on');
  t.end();
});

t.test('a source that leaves gives its chunks back; chunks also in flight elsewhere are not queued twice', (t) => {
  const s = make({ chunks: 4 });
  const a = peer('a');
  const b = peer('b');
  const c = peer('c');
  s.addSource(a, undefined);
  s.addSource(b, undefined);
  t.same(drain(s, a), [0, 1, 2, 3], 'a takes everything');
  t.equal(s.next(b), 0, 'endgame: b duplicates the oldest');
  s.removeSource(a);
  t.equal(s.inFlightAt(a), 0);
  t.equal(s.copiesInFlight(0), 1, 'chunk 0 is still covered by b');
  s.addSource(c, undefined);
  t.same(drain(s, c), [1, 2, 3, 0], 'c gets the orphaned chunks, then endgame on the one b still fetches');
  t.equal(s.next(a), undefined, 'a source that left gets nothing');
  t.end();
});

t.test('endgame: nothing left unrequested, a second source asks for chunks in flight elsewhere, oldest first, at most 2 copies', (t) => {
  const s = make({ chunks: 3 });
  const [a, b, c] = [peer('a'), peer('b'), peer('c')];
  for (const x of [a, b, c]) s.addSource(x, undefined);
  t.equal(s.next(a), 0);
  t.equal(s.next(b), 1);
  t.equal(s.next(a), 2);
  t.equal(s.next(c), 0, 'the oldest request first');
  t.equal(s.copiesInFlight(0), 2);
  t.equal(s.next(b), 2, 'chunk 0 has 2 copies and 1 is its own: the next oldest');
  t.equal(s.next(c), 1);
  t.equal(s.next(c), undefined, 'every chunk it does not fetch already has 2 copies in flight');
  t.equal(s.next(a), undefined);
  t.end();
});

t.test('endgame for a partial holder only offers chunks it has', (t) => {
  const s = make({ chunks: 3 });
  const a = peer('a');
  const p = peer('p');
  s.addSource(a, undefined);
  s.addSource(p, bits(3, [2]));
  t.same(drain(s, a), [0, 1, 2]);
  t.equal(s.next(p), 2, 'the one in flight it has');
  t.equal(s.next(p), undefined);
  t.end();
});

t.test('the first verified copy wins: the others are named so they can be withdrawn, and the chunk is never handed out again', (t) => {
  const s = make({ chunks: 2 });
  const [a, b] = [peer('a'), peer('b')];
  s.addSource(a, undefined);
  s.addSource(b, undefined);
  t.same(drain(s, a), [0, 1]);
  t.same(drain(s, b), [0, 1], 'both in flight twice');
  t.ok(s.isNeeded(0));
  t.same(s.markWriting(b, 0), [a], 'a still had chunk 0 in flight');
  t.notOk(s.isNeeded(0), 'being written: a copy that arrives now is a duplicate');
  t.equal(s.inFlightAt(a), 1, 'withdrawn from a');
  t.equal(s.copiesInFlight(0), 0);
  s.release(a, 0);
  t.equal(s.next(a), undefined, 'a duplicate that lost the race does not put the chunk back');
  t.same(s.markWriting(a, 1), [b]);
  t.equal(s.markWriting(b, 1), undefined, 'a second verified copy (checked while the first won) is not to be written');
  t.equal(s.inFlightAt(b), 0);
  t.end();
});

t.test('done counting: markDone once per chunk, complete at the end', (t) => {
  const s = make({ chunks: 3, done: [1] });
  const a = peer('a');
  s.addSource(a, undefined);
  for (const i of drain(s, a)) {
    s.markWriting(a, i);
    t.notOk(s.isDone(i), 'being written is not done yet (not served to others)');
    s.markDone(i);
    s.markDone(i);
  }
  t.equal(s.doneCount, 3, 'counted once each');
  t.ok(s.complete);
  t.equal(s.next(a), undefined);
  t.end();
});

t.test('a chunk written while a bad copy was rejected elsewhere is not fetched again', (t) => {
  const s = make({ chunks: 1 });
  const [a, b] = [peer('a'), peer('b')];
  s.addSource(a, undefined);
  s.addSource(b, undefined);
  t.equal(s.next(a), 0);
  t.equal(s.next(b), 0);
  s.release(b, 0); // b sent bad data
  t.equal(s.copiesInFlight(0), 1, 'still covered by a');
  t.equal(s.next(b), 0, 'b could try again in the endgame (the Download drops a bad peer first)');
  s.markWriting(a, 0);
  s.release(b, 0);
  t.equal(s.next(b), undefined);
  t.end();
});

t.test('the queue for partial holders is not scanned from the start on every call', (t) => {
  // A partial holder that has only the last of 100 000 chunks, asked 20 000 times: rescanning the queue
  // each time would take billions of steps.
  const n = 100_000;
  const s = make({ chunks: n });
  const p = peer('p');
  const c = peer('c');
  s.addSource(p, bits(n, [n - 1]));
  s.addSource(c, undefined);
  t.equal(s.next(p), n - 1, 'the one it has');
  t.equal(s.next(c), 0, 'a complete holder takes from the front');
  const started = performance.now();
  let handedOut = 0;
  for (let k = 0; k < 20_000; k++) if (s.next(p) !== undefined) handedOut++;
  t.equal(handedOut, 0, 'nothing more for it');
  t.ok(performance.now() - started < 1000, `20 000 calls took ${Math.round(performance.now() - started)} ms`);
  t.end();
});

t.test('property: whatever happens, every chunk is done exactly once and the limits hold', (t) => {
  type Op =
    | { op: 'next'; src: number }
    | { op: 'release'; src: number; pick: number }
    | { op: 'deliver'; src: number; pick: number }
    | { op: 'leave-or-join'; src: number }
    | { op: 'have'; src: number; held: number[] };
  const N = 6;
  const SOURCES = 4;
  const src = fc.nat(SOURCES - 1);
  const op = fc.oneof(
    { arbitrary: fc.record({ op: fc.constant('next' as const), src }), weight: 6 },
    { arbitrary: fc.record({ op: fc.constant('release' as const), src, pick: fc.nat() }), weight: 2 },
    { arbitrary: fc.record({ op: fc.constant('deliver' as const), src, pick: fc.nat() }), weight: 3 },
    { arbitrary: fc.record({ op: fc.constant('leave-or-join' as const), src }), weight: 1 },
    { arbitrary: fc.record({ op: fc.constant('have' as const), src, held: fc.array(fc.nat(N - 1)) }), weight: 1 },
  ) as fc.Arbitrary<Op>;
  fc.assert(
    fc.property(fc.array(op, { minLength: 10, maxLength: 200, size: 'max' }), fc.array(fc.nat(N - 1), { maxLength: 3 }), fc.nat(), fc.boolean(), (ops, done, seed, random) => {
      const s = new Scheduler<Peer>({ chunks: N, done, order: random ? 'random' : 'file', random: seeded(seed) });
      const peers = Array.from({ length: SOURCES }, (_, i) => peer(`p${i}`));
      // The model. Peers 0-1 hold the whole file, 2-3 part of it. `inFlight`: requests the scheduler counts;
      // `late`: requests withdrawn (another copy won) whose answer may still come in.
      const inFlight = peers.map(() => new Set<number>());
      const late = peers.map(() => new Set<number>());
      const joined = peers.map(() => true);
      const haves: Array<Uint8Array | undefined> = peers.map((_, i) => (i < 2 ? undefined : new Uint8Array(N)));
      peers.forEach((p, i) => s.addSource(p, haves[i]));
      const written = new Set<number>(done);
      for (const o of ops) {
        const p = peers[o.src]!;
        const mine = inFlight[o.src]!;
        const answers = [...mine, ...late[o.src]!];
        if (o.op === 'next') {
          const i = s.next(p);
          if (i === undefined) continue;
          if (!joined[o.src]) return false; // a source that left gets nothing
          if (mine.has(i) || written.has(i)) return false; // twice at one source, or a chunk already written
          if (haves[o.src] && haves[o.src]![i] !== 1) return false; // a chunk a partial holder lacks
          mine.add(i);
          if (inFlight.filter((f) => f.has(i)).length > 2) return false; // at most 2 copies
        } else if ((o.op === 'release' || o.op === 'deliver') && answers.length > 0) {
          const i = answers[o.pick % answers.length]!;
          mine.delete(i);
          late[o.src]!.delete(i);
          if (o.op === 'release') {
            s.release(p, i); // failed, cancelled, bad data, or a duplicate that lost the race
            continue;
          }
          const others = s.markWriting(p, i);
          if (others === undefined) {
            if (!written.has(i)) return false; // refused a copy that was still needed
            continue;
          }
          if (written.has(i)) return false; // a second copy to be written
          for (const other of others) {
            const k = peers.indexOf(other);
            if (!inFlight[k]!.delete(i)) return false; // named a source that did not have it in flight
            late[k]!.add(i);
          }
          if (inFlight.some((f) => f.has(i))) return false; // every other copy was named
          s.markDone(i);
          written.add(i);
        } else if (o.op === 'leave-or-join') {
          if (joined[o.src]) {
            s.removeSource(p);
            mine.clear();
            late[o.src]!.clear();
          } else {
            s.addSource(p, haves[o.src]);
          }
          joined[o.src] = !joined[o.src];
        } else if (o.op === 'have' && haves[o.src]) {
          const b = bits(N, o.held);
          haves[o.src] = b;
          s.setHave(p, b);
        }
        if (s.doneCount !== written.size) return false;
        for (let k = 0; k < SOURCES; k++) if (s.inFlightAt(peers[k]!) !== inFlight[k]!.size) return false;
      }
      // Whatever state it is in, the sources still there, asked in turn and answering, finish the download
      // once a complete holder is among them.
      const last = peer('last');
      s.addSource(last, undefined);
      peers.forEach((p, k) => joined[k] && s.removeSource(p));
      for (let i = s.next(last); i !== undefined; i = s.next(last)) {
        if (written.has(i)) return false;
        s.markWriting(last, i);
        s.markDone(i);
        written.add(i);
      }
      return s.complete && written.size === N && s.doneCount === N;
    }),
    { numRuns: 1000 },
  );
  t.pass('1000 random histories');
  t.end();
});
