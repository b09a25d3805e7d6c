/**
 * Which holder gets a chunk buffer when there are fewer buffers than requests the holders could take
 * (peerd/source.ts nextToFill, used by the download's pump): shares in proportion to each holder's depth,
 * which a far holder's round trip raises (recordDelivery).
 */
import t from 'tap';
import { nextToFill, recordDelivery, type Source } from '../../peerd/source.js';

const MiB = 1024 * 1024;

interface Fake {
  name: string;
  depth: number;
  inFlight: Map<number, AbortController>;
}

const fake = (name: string, depth: number): Fake => ({ name, depth, inFlight: new Map() });

/** Hands out `buffers` requests one at a time, as the pump does, and counts what each holder got. */
function fill(sources: Fake[], buffers: number): Record<string, number> {
  for (let i = 0; i < buffers; i++) {
    const next = nextToFill(sources);
    if (!next) break;
    next.inFlight.set(i, new AbortController());
  }
  return Object.fromEntries(sources.map((s) => [s.name, s.inFlight.size]));
}

t.test('holders alike share scarce buffers evenly', async (t) => {
  t.same(fill([fake('a', 4), fake('b', 4), fake('c', 4), fake('d', 4)], 10), { a: 3, b: 3, c: 2, d: 2 });
});

t.test('a holder with twice the depth gets twice the share of scarce buffers', async (t) => {
  t.same(fill([fake('near1', 4), fake('near2', 4), fake('far', 8)], 8), { near1: 2, near2: 2, far: 4 });
});

t.test('no holder gets more than its depth, however many buffers are free', async (t) => {
  t.same(fill([fake('a', 2), fake('b', 3)], 24), { a: 2, b: 3 });
  t.equal(nextToFill([fake('full', 0)]), undefined, 'none when every holder is at its depth');
});

t.test("a far holder's round trip raises its depth: it then takes more of the buffers than near ones", async (t) => {
  const source = (rttMs: number): Source => ({ rttMs, depth: 4, bytes: 0, chunks: 0, startedAt: 0, deliveredAt: 0, chunkMs: [], deweighted: false, inFlight: new Map() }) as unknown as Source;
  const near = source(2);
  const far = source(200);
  // Both deliver 12.5 MB/s (100 Mbit/s) for a second.
  for (let i = 1; i <= 12; i++) {
    recordDelivery(near, MiB, 80, MiB, i * 83);
    recordDelivery(far, MiB, 280, MiB, i * 83);
  }
  t.ok(far.depth > near.depth, `depth ${far.depth} for the far holder, ${near.depth} for the near one`);
  const named = [Object.assign(near, { name: 'near' }), Object.assign(far, { name: 'far' })];
  const got = fill(named as unknown as Fake[], 8);
  t.ok(got.far! > got.near!, `of 8 buffers the far holder got ${got.far}, the near one ${got.near}`);
});
