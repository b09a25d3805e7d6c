/**
 * protocol/name-order.ts: the order `p2p search` lists files in (by name ignoring case and accents, then
 * by exact name, then by id), which the peer daemon gives a tracker's SEARCH answer. The sort packs
 * characters into numbers; these properties hold it to a plain comparator on names built to stress it.
 */
import t from 'tap';
import fc from 'fast-check';
import { inNameOrder } from '../../protocol/name-order.js';

interface Hit {
  name: string;
  id: string;
}

/** The order search documents: by name ignoring case and accents, then by exact name, then by id. */
function referenceOrder(a: Hit, b: Hit): number {
  const key = (name: string): string => name.normalize('NFKD').replace(/\p{M}/gu, '').toLowerCase();
  const cmp = (x: string, y: string): number => (x < y ? -1 : x > y ? 1 : 0);
  return cmp(key(a.name), key(b.name)) || cmp(a.name, b.name) || cmp(a.id, b.id);
}

const sorted = (hits: Hit[]): Hit[] => inNameOrder(hits, (h) => h.name, (h) => h.id);

t.test('hits come in name order, however many and however alike their names', async (t) => {
  // Long shared prefixes, the same name under several ids, names that differ only in case or accents, one
  // a prefix of another, characters past ASCII and control ones.
  const pieces = ['finance-', 'report-2021-', 'report-2021-0', 'a', 'A', 'é', 'e', 'z', '~', '\u007f', '\u0001', '-', '2021', 'Ω', 'ß', ''];
  const name = fc.array(fc.constantFrom(...pieces), { minLength: 1, maxLength: 6 }).map((parts) => parts.join('') || 'empty');
  fc.assert(
    fc.property(fc.array(fc.tuple(name, fc.nat(3)), { minLength: 1, maxLength: 300 }), (files) => {
      const hits = files.map(([n, copy], i) => ({ name: n, id: (i % 4 === 0 ? copy : i).toString(16).padStart(64, '0') }));
      const got = sorted(hits);
      const want = [...hits].sort(referenceOrder);
      if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`order differs: ${JSON.stringify(got.map((h) => h.name))}`);
    }),
    { numRuns: 300 },
  );
  t.pass('300 random lists come out in the reference order');
  // Many names alike up to characters past ASCII, then differing in ASCII: the sort cannot order them by
  // what follows those characters.
  const alike = fc.tuple(fc.constantFrom('ß', 'ω', 'ж', 'a', '\u007f'), fc.constantFrom('ß', 'ж', 'b'), fc.stringMatching(/^[a-c]{1,4}$/)).map(([x, y, rest]) => `same-start-${x}${y}-${rest}`);
  fc.assert(
    fc.property(fc.array(alike, { minLength: 40, maxLength: 200 }), (names) => {
      const hits = names.map((n, i) => ({ name: n, id: i.toString(16).padStart(64, '0') }));
      const got = sorted(hits);
      const want = [...hits].sort(referenceOrder);
      if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`order differs: ${JSON.stringify(got.map((h) => h.name))}`);
    }),
    { numRuns: 100 },
  );
  t.pass('names alike up to characters past ASCII come in the reference order too');
});

t.test('a list in name order is given back as a new array, the input untouched', async (t) => {
  const hits = [
    { name: 'b.txt', id: '2' },
    { name: 'A.txt', id: '1' },
    { name: 'a.txt', id: '3' },
    { name: 'à.txt', id: '0' },
  ];
  const before = JSON.stringify(hits);
  t.same(
    sorted(hits).map((h) => `${h.name} ${h.id}`),
    ['A.txt 1', 'a.txt 3', 'à.txt 0', 'b.txt 2'],
    'case and accents set aside first, then the exact name (A before a before à), then the id',
  );
  t.equal(JSON.stringify(hits), before, 'the list given is not reordered');
  t.same(sorted([]), [], 'an empty answer stays empty');
});
