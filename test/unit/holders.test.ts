/**
 * daemon/holders.ts and daemon/name-index.ts: the compact holder table and its search index answer
 * exactly what a plain model (a map of maps, and a scan of every name) answers, through any sequence of
 * registrations, renames, unregistrations and departures, including long churn that leaves the index
 * stale postings to compact.
 */
import t from 'tap';
import fc from 'fast-check';
import { HolderTable, idOfKey, keyOf } from '../../daemon/holders.js';
import { utf8Length } from '../../protocol/codec.js';
import { NameIndex, trigramKeys } from '../../daemon/name-index.js';
import type { FileReg } from '../../daemon/ops.js';

const PEERS = ['a', 'b', 'c', 'd'].map((c) => c.repeat(40));
const IDS = ['1', '2', '3', '4', '5', '6'].map((c) => c.repeat(64));
// 'x' and 'İb' are too short for a trigram; the Kelvin sign (U+212A) and İ lower-case to ASCII letters.
const NAMES = ['Report.PDF', 'report-2024.pdf', 'photo.jpg', 'PHOTO-raw.jpg', 'notes', 'Ünïcode-Straße.txt', 'x', 'İb', '\u212Aelvin.dat', 'Banana-BANANA.txt'];
const TEXTS = ['', 'r', 'po', 'report', 'PHOTO', '.jpg', 'straße', 'ünï', 'nope', 'e-2', 'notes', 'x', 'i', 'ib', 'k', 'kel', 'b', 'İ', 'nana', 'a-b'];

type Action =
  | { k: 'register'; peer: number; files: Array<{ id: number; name: number; complete: boolean }> }
  | { k: 'unregister'; peer: number; ids: number[] | 'all' }
  | { k: 'drop'; peer: number };

/** The plain model: peer -> id -> { names, complete }. */
class Model {
  readonly peers = new Map<string, Map<string, { names: Set<string>; complete: boolean }>>();

  apply(a: Action): void {
    const peerId = PEERS[a.peer]!;
    if (a.k === 'register') {
      const mine = this.peers.get(peerId) ?? new Map();
      this.peers.set(peerId, mine);
      const groups = new Map<string, { names: Set<string>; complete: boolean }>();
      for (const f of a.files) {
        const g = groups.get(IDS[f.id]!) ?? { names: new Set<string>(), complete: false };
        g.names.add(NAMES[f.name]!);
        g.complete ||= f.complete;
        groups.set(IDS[f.id]!, g);
      }
      for (const [id, g] of groups) mine.set(id, g);
    } else if (a.k === 'unregister') {
      const mine = this.peers.get(peerId);
      if (!mine) return;
      if (a.ids === 'all') mine.clear();
      else for (const i of a.ids) mine.delete(IDS[i]!);
    } else {
      this.peers.delete(peerId);
    }
  }

  search(text: string): string[] {
    const hits = new Set<string>();
    for (const files of this.peers.values()) {
      for (const [id, { names }] of files) {
        for (const name of names) {
          if (name.toLowerCase().includes(text.toLowerCase())) {
            const peers = [...this.peers.values()].filter((f) => f.has(id)).length;
            hits.add(`${id.slice(0, 1)} ${name} ${peers}`);
          }
        }
      }
    }
    return [...hits].sort();
  }

  holders(id: string): string[] {
    return [...this.peers].filter(([, f]) => f.has(id)).map(([p, f]) => `${p.slice(0, 1)}:${f.get(id)!.complete}`).sort();
  }

  holderCount(): number {
    return [...this.peers.values()].reduce((n, f) => n + f.size, 0);
  }
}

/** A table's holder lists in the canonical form the state hash is made of. */
const canonical = (table: HolderTable): unknown[] => table.canonicalOrder().map((id) => table.canonicalPeer(id));

function registrationOf(a: Extract<Action, { k: 'register' }>): FileReg[] {
  return a.files.map((f) => ({ id: IDS[f.id]!, name: NAMES[f.name]!, size: f.id * 100, complete: f.complete }));
}

function applyTo(table: HolderTable, a: Action): void {
  const peerId = PEERS[a.peer]!;
  if (a.k === 'register') {
    table.register({ peerId, publicKey: 'ab'.repeat(32), host: '10.0.0.1', port: 7000 + a.peer }, registrationOf(a));
  } else if (a.k === 'unregister') {
    table.unregister(peerId, a.ids === 'all' ? 'all' : a.ids.map((i) => IDS[i]!));
  } else {
    table.dropPeer(peerId);
  }
}

const action: fc.Arbitrary<Action> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      k: fc.constant('register' as const),
      peer: fc.nat(PEERS.length - 1),
      files: fc.array(fc.record({ id: fc.nat(IDS.length - 1), name: fc.nat(NAMES.length - 1), complete: fc.boolean() }), { minLength: 1, maxLength: 5 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('unregister' as const), peer: fc.nat(PEERS.length - 1), ids: fc.oneof(fc.constant('all' as const), fc.array(fc.nat(IDS.length - 1), { maxLength: 3 })) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('drop' as const), peer: fc.nat(PEERS.length - 1) }) },
);

t.test('the compact table answers search, lookup and sizes as the plain model does, after any actions', async (t) => {
  fc.assert(
    fc.property(fc.array(action, { maxLength: 60 }), (actions) => {
      const table = new HolderTable();
      const model = new Model();
      for (const a of actions) {
        // What the main checks a REGISTER's caps with is what registering it then holds.
        const peerId = PEERS[a.peer]!;
        const predicted = a.k === 'register' ? table.registrationTotals(peerId, registrationOf(a)) : undefined;
        applyTo(table, a);
        model.apply(a);
        if (predicted && JSON.stringify(table.registrationTotals(peerId)) !== JSON.stringify(predicted)) {
          throw new Error(`totals ${JSON.stringify(table.registrationTotals(peerId))} != predicted ${JSON.stringify(predicted)}`);
        }
      }
      for (const text of TEXTS) {
        const got = table.search(text, 1000).hits.map((h) => `${idOfKey(h.key).slice(0, 1)} ${h.name} ${h.peers}`).sort();
        if (JSON.stringify(got) !== JSON.stringify(model.search(text))) throw new Error(`search '${text}': ${JSON.stringify(got)} != ${JSON.stringify(model.search(text))}`);
      }
      for (const id of IDS) {
        const got = (table.lookup(id)?.holders ?? []).map((h) => `${h.peerId.slice(0, 1)}:${h.complete}`).sort();
        if (JSON.stringify(got) !== JSON.stringify(model.holders(id))) throw new Error(`lookup ${id.slice(0, 1)}: ${JSON.stringify(got)} != ${JSON.stringify(model.holders(id))}`);
      }
      if (table.sizes().holders !== model.holderCount()) throw new Error(`holders ${table.sizes().holders} != ${model.holderCount()}`);
      // What a snapshot carries registers again into the same table.
      const copy = new HolderTable();
      for (const { peer, files } of table.holdings()) copy.register(peer, files);
      if (JSON.stringify(canonical(copy)) !== JSON.stringify(canonical(table))) throw new Error('a copy made from the snapshot differs');
    }),
    { numRuns: 400 },
  );
  t.pass('400 random action sequences agree with the model');
});

t.test('a re-announcement of exactly what is held is recognised, and any change is not', async (t) => {
  const table = new HolderTable();
  const peer = { peerId: PEERS[0]!, publicKey: 'ab'.repeat(32), host: '10.0.0.1', port: 7000 };
  const files: FileReg[] = [
    { id: IDS[0]!, name: 'a.txt', size: 1, complete: true },
    { id: IDS[1]!, name: 'b.txt', size: 2, complete: false },
    { id: IDS[1]!, name: 'b copy.txt', size: 2, complete: false },
  ];
  t.notOk(table.holdsExactly(peer, files), 'nothing is held yet');
  table.register(peer, files);
  t.ok(table.holdsExactly(peer, files), 'the same announcement again');
  t.ok(table.holdsExactly(peer, [files[2]!, files[0]!, files[1]!]), 'in another order');
  t.notOk(table.holdsExactly(peer, [{ ...files[0]!, name: 'renamed.txt' }]), 'a rename');
  t.notOk(table.holdsExactly(peer, [{ ...files[1]!, complete: true }, files[2]!]), 'a download completed');
  t.notOk(table.holdsExactly({ ...peer, port: 7001 }, files), 'a new port');
  t.notOk(table.holdsExactly(peer, [{ ...files[0]!, id: IDS[2]! }]), 'a file not held');
  t.notOk(table.holdsExactly(peer, [files[0]!, { ...files[1]!, name: 'b.txt' }]), 'one of two names of a file, each id once');
  t.notOk(table.holdsExactly(peer, [{ ...files[0]!, size: 3 }]), 'another size');
  // A peer with every file complete keeps no set of partial ones: a file announced as partial again is a change.
  const whole = { ...peer, peerId: PEERS[1]! };
  table.register(whole, [files[0]!]);
  t.ok(table.holdsExactly(whole, [files[0]!]), 'a peer holding only complete files, the same again');
  t.notOk(table.holdsExactly(whole, [{ ...files[0]!, complete: false }]), 'its file announced as partial now');
});

t.test('a REGISTER is taken for a re-announcement exactly when applying it would change nothing', async (t) => {
  /** What a table shows of its peers' holdings: canonical lists, and each file's size and holders' completeness. */
  const view = (table: HolderTable): string => JSON.stringify([canonical(table), IDS.map((id) => table.lookup(id))]);
  fc.assert(
    fc.property(fc.array(action, { maxLength: 30 }), action, (actions, last) => {
      if (last.k !== 'register') return;
      const table = new HolderTable();
      for (const a of actions) applyTo(table, a);
      const peer = { peerId: PEERS[last.peer]!, publicKey: 'ab'.repeat(32), host: '10.0.0.1', port: 7000 + last.peer };
      const said = table.holdsExactly(peer, registrationOf(last));
      const before = view(table);
      applyTo(table, last);
      const unchanged = view(table) === before && table.hasPeer(peer.peerId);
      if (said !== unchanged) throw new Error(`holdsExactly said ${said}, but applying it ${unchanged ? 'changed nothing' : 'changed the table'}`);
    }),
    { numRuns: 2000 },
  );
  t.pass('2000 random tables and REGISTERs');
});

/** Adds `item` to the index, then removes the oldest live item while more than `keep` are live. */
function churn(index: NameIndex<{ names: string[] }>, live: Map<number, { names: string[] }>, item: { names: string[] }, keep: number): void {
  const slot = index.insert(item);
  for (const n of item.names) index.addName(slot, n);
  live.set(slot, item);
  if (live.size <= keep) return;
  const [oldSlot, old] = live.entries().next().value!;
  live.delete(oldSlot);
  const names = old.names;
  old.names = [];
  for (const n of names) index.removeName(n);
  index.release(oldSlot);
}

t.test('under long churn the index compacts: stale postings stay bounded and search stays exact', async (t) => {
  const index = new NameIndex<{ names: string[] }>((item) => item.names);
  const live = new Map<number, { names: string[] }>();
  let maxStaleShare = 0;
  for (let round = 0; round < 20_000; round++) {
    churn(index, live, { names: [`file-${round}.bin`, `copy of ${round % 97}`] }, 500);
    const { postings, stale } = index.counts;
    if (round > 5000) maxStaleShare = Math.max(maxStaleShare, stale / postings);
  }
  const livePostings = [...live.values()].reduce((n, it) => n + it.names.reduce((m, name) => m + trigramKeys(name.toLowerCase()).size, 0), 0);
  t.ok(index.counts.postings < 3 * livePostings, `postings held (${index.counts.postings}) stay within 3 times the live ones (${livePostings})`);
  t.ok(maxStaleShare < 0.8, `stale postings never exceed 80% of those held (max ${(maxStaleShare * 100).toFixed(0)}%)`);
  const found: string[] = [];
  index.search('file-1999', (_item, name) => (found.push(name), true));
  t.same(found.sort(), ['file-19990.bin', 'file-19991.bin', 'file-19992.bin', 'file-19993.bin', 'file-19994.bin', 'file-19995.bin', 'file-19996.bin', 'file-19997.bin', 'file-19998.bin', 'file-19999.bin'], 'search finds exactly the live names');
});

t.test('a mass removal leaves its compaction to the following turns of the event loop, a slice at a time', async (t) => {
  const index = new NameIndex<{ names: string[] }>((item) => item.names);
  const items = Array.from({ length: 4000 }, (_, i) => ({ names: [`departed-peer-file-${i}.bin`] }));
  const slots = items.map((item) => {
    const slot = index.insert(item);
    for (const n of item.names) index.addName(slot, n);
    return slot;
  });
  const before = index.counts.postings;
  // A tracker drops a quarter of its files in one write (peers that did not come back after a takeover).
  for (let i = 0; i < 1000; i++) {
    const names = items[i]!.names;
    items[i]!.names = [];
    for (const n of names) index.removeName(n);
    index.release(slots[i]!);
  }
  t.equal(index.counts.postings, before, 'the write itself compacted nothing');
  const staleAfterWrite = index.counts.stale;
  t.ok(staleAfterWrite > 0, `it left ${staleAfterWrite} stale postings`);
  const staleByTurn: number[] = [];
  for (let turn = 0; turn < 100; turn++) {
    await new Promise<void>((resolve) => setImmediate(resolve));
    staleByTurn.push(index.counts.stale);
  }
  const paidOver = staleByTurn.filter((n, i) => n < (staleByTurn[i - 1] ?? staleAfterWrite)).length;
  t.ok(paidOver > 1, `the debt was paid in slices over ${paidOver} later turns`);
  t.ok(staleByTurn.at(-1)! < staleAfterWrite, `stale postings fell from ${staleAfterWrite} to ${staleByTurn.at(-1)}`);
  const found: string[] = [];
  index.search('departed-peer-file-399', (_item, name) => (found.push(name), true));
  t.same(found.sort(), Array.from({ length: 10 }, (_, i) => `departed-peer-file-399${i}.bin`), 'search sees exactly the live names');
  const gone: string[] = [];
  index.search('departed-peer-file-99', (_item, name) => (gone.push(name), true));
  t.same(gone, [], 'and none of the removed ones');
});

t.test('a text whose rarest trigrams list other names is narrowed by its further trigrams, and finds exactly its names', async (t) => {
  // 'sales', 'handbook' and 's-h' are all common, 'sales-handbook' rare: each of its trigrams lists
  // thousands of names, and only reading several lists leaves few candidates to check by their strings.
  let checked = 0;
  const index = new NameIndex<{ name: string }>((item) => (checked++, item.name));
  const names = [
    ...Array.from({ length: 6000 }, (_, i) => `sales-report-${i}.pdf`),
    ...Array.from({ length: 6000 }, (_, i) => `team-handbook-${i}.pdf`),
    ...Array.from({ length: 6000 }, (_, i) => `bus-hub-${i}.pdf`),
    ...Array.from({ length: 150 }, (_, i) => `sales-handbook-${i}.pdf`),
  ];
  for (const name of names) index.addName(index.insert({ name }), name);
  for (const text of ['sales-handbook', 'SALES-HANDBOOK-1', 'report-59', 'handbook-14']) {
    checked = 0;
    const found: string[] = [];
    index.search(text, (_item, name) => (found.push(name), true));
    const want = names.filter((n) => n.toLowerCase().includes(text.toLowerCase()));
    t.same(found.sort(), want.sort(), `'${text}' finds exactly the ${want.length} names containing it`);
    if (text === 'sales-handbook') t.ok(checked <= 2 * want.length, `and checks ${checked} names for its ${want.length} hits, not the 6,150 its rarest trigrams list`);
  }
});

t.test('texts of one and two characters find short names and names ending in them, through churn', async (t) => {
  const index = new NameIndex<{ names: string[] }>((item) => item.names);
  const live = new Map<number, { names: string[] }>();
  const words = ['hr', 'x', 'ab', 'HR-policy.pdf', 'sales-hr', 'thread', 'q', 'xq', 'other.bin'];
  for (let round = 0; round < 3000; round++) churn(index, live, { names: [words[round % words.length]!] }, 40);
  await new Promise<void>((resolve) => setImmediate(resolve));
  for (const text of ['hr', 'HR', 'x', 'q', 'ab', 'r', 'd']) {
    const found: string[] = [];
    index.search(text, (_item, name) => (found.push(name), true));
    const want = [...live.values()].flatMap((it) => it.names).filter((n) => n.toLowerCase().includes(text.toLowerCase()));
    t.same(found.sort(), want.sort(), `'${text}' finds exactly the ${want.length} live names containing it`);
  }
});

t.test('a file id is keyed by its 32 bytes and spelt back in hex; any other id is kept apart, as it is', async (t) => {
  const id = 'c0ffee'.padEnd(64, '0') + '';
  const key = keyOf(id);
  t.equal(key.length, 32, 'the key is 32 characters');
  t.same(Buffer.from(key, 'latin1'), Buffer.from(id, 'hex'), 'one character per byte of the id');
  t.equal(idOfKey(key), id, 'and back');
  t.not(keyOf(id.toUpperCase()), key, 'upper-case hex is another id, as its spelling is another string');
  t.equal(idOfKey(keyOf(id.toUpperCase())), id.toUpperCase(), 'and it comes back as it was');
  const others = ['', 'p1', 'zz'.repeat(32), 'a'.repeat(63), 'a'.repeat(66), Buffer.from(key, 'latin1').toString('latin1')];
  const keys = new Set([key, ...others.map(keyOf)]);
  t.equal(keys.size, others.length + 1, 'other ids have keys of their own, none of them a real id\'s key');
  for (const other of others) t.equal(idOfKey(keyOf(other)), other, `'${JSON.stringify(other).slice(1, 9)}' (${other.length} characters) comes back as it was`);
  // Every id of 64 lower-case hex digits keys as its bytes; a single other character anywhere makes it another id.
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.nat(63), fc.constantFrom('g', 'G', 'A', 'F', '/', ':', '`', '\u00e9', ' '), (bytes, at, odd) => {
      const hex = Buffer.from(bytes).toString('hex');
      if (keyOf(hex) !== Buffer.from(bytes).toString('latin1')) throw new Error(`${hex} is not keyed by its bytes`);
      const bad = hex.slice(0, at) + odd + hex.slice(at + 1);
      if (keyOf(bad).length === 32 || idOfKey(keyOf(bad)) !== bad) throw new Error(`${bad} was taken for a real id`);
    }),
    { numRuns: 2000 },
  );
  const table = new HolderTable();
  const files: FileReg[] = [{ id, name: 'big.iso', size: 5e9, complete: true }];
  table.register({ peerId: PEERS[0]!, publicKey: 'ab'.repeat(32), host: '10.0.0.1', port: 7000 }, files);
  t.same(table.lookup(id)?.size, 5e9, 'a size past 2^32 comes back whole');
  t.same([...table.holdings()][0]!.files, files, 'the snapshot spells the id in hex as registered');
});

t.test('a name is counted in UTF-8 bytes against the per-peer cap, as Buffer.byteLength counts it, lone surrogates too', async (t) => {
  for (const s of ['', 'notes.txt', 'Ünïcode-Straße.txt', '日本語.pdf', '😀.png', '\ud800', 'a\udc00b', '\ud800\ud800\udc00', '\udc00\ud800']) {
    t.equal(utf8Length(s), Buffer.byteLength(s), JSON.stringify(s));
  }
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => utf8Length(s) === Buffer.byteLength(s)),
    { numRuns: 5000 },
  );
  t.pass('5000 random strings of any UTF-16 code units agree');
});

t.test('a name posts its slot once under each of its trigrams, however often one repeats', async (t) => {
  const index = new NameIndex<string>((name) => name);
  const name = 'Banana-BANANA-banana.txt';
  index.addName(index.insert(name), name);
  t.equal(index.counts.postings, trigramKeys(name.toLowerCase()).size, `${trigramKeys(name.toLowerCase()).size} postings for its distinct trigrams, not ${name.length - 2}`);
  const found: string[] = [];
  index.search('nana', (item) => (found.push(item), true));
  t.same(found, [name], 'and a search finds it once');
});
