/**
 * daemon/state.ts and daemon/store.ts: the admin's pages of the blacklist and of the reports. Read page by
 * page from the first, they give every entry once, in order, each page within its count and size, and
 * the last page says it is the last; a ban applied between two pages shows in the later ones.
 */
import t from 'tap';
import { TrackerState } from '../../daemon/state.js';
import { Store, type ReportRecord } from '../../daemon/store.js';

const hex = (n: number, width: number): string => n.toString(16).padStart(width, '0');

function stateWithBans(count: number): TrackerState {
  const store = new Store(':memory:');
  store.transaction(() => {
    // Inserted out of order, some with long reasons: the pages sort by target and keep to their size.
    for (let i = 0; i < count; i++) {
      const n = (i * 7919) % count;
      store.putBan({ target: hex(n, 40), reason: n % 10 === 0 ? 'r'.repeat(500) : `ban ${n}`, since: 1_000 + n, addedBy: 'admin@127.0.0.1', stamp: [1, n + 1] });
    }
  });
  return new TrackerState(store);
}

function readAll(state: TrackerState, limit: number, maxBytes: number): { targets: string[]; pages: number; largest: number } {
  const targets: string[] = [];
  let after = '';
  let pages = 0;
  let largest = 0;
  for (;;) {
    const page = state.blacklistPage(after, limit, maxBytes);
    pages++;
    largest = Math.max(largest, page.entries.length);
    targets.push(...page.entries.map((e) => e.target));
    if (page.next === '') return { targets, pages, largest };
    if (page.next !== page.entries.at(-1)?.target) throw new Error(`next ${page.next} is not the page's last target`);
    after = page.next;
  }
}

t.test('blacklist pages: every entry once, in target order, within the count and the size', async (t) => {
  const state = stateWithBans(2_345);
  t.teardown(() => state.store.close());
  const sorted = [...state.blacklistTargets()];
  t.equal(sorted.length, 2_345, 'every ban is loaded');

  const byCount = readAll(state, 500, 4 * 1024 * 1024);
  t.same(byCount.targets, sorted, 'pages of 500 give every target once, in order');
  t.equal(byCount.pages, 5, 'in 5 pages (the last one short)');

  const bySize = readAll(state, 5_000, 20_000);
  t.same(bySize.targets, sorted, 'pages cut by size give the same');
  t.ok(bySize.largest < 200, `a 20 kB page holds ${bySize.largest} entries`);

  const tiny = state.blacklistPage('', 5_000, 1);
  t.equal(tiny.entries.length, 1, 'a page never comes back empty while entries follow, whatever the size');

  const past = state.blacklistPage(hex(2_345, 40), 10, 1 << 20);
  t.same(past, { entries: [], next: '' }, 'after the last target: an empty last page');
  const between = state.blacklistPage(`${hex(100, 40)}-`, 1, 1 << 20);
  t.equal(between.entries[0]?.target, hex(101, 40), 'a cursor that is no target starts at the next one');
  t.same(new TrackerState(new Store(':memory:')).blacklistPage('', 10, 1 << 20), { entries: [], next: '' }, 'an empty blacklist is one empty page');
});

t.test('a ban applied between two pages is in the pages that come after its place', async (t) => {
  const state = stateWithBans(100);
  t.teardown(() => state.store.close());
  const first = state.blacklistPage('', 50, 1 << 20);
  const late = 'f'.repeat(40);
  const before = state.blacklistVersion;
  state.apply({ term: 2, index: 500, op: { op: 'blacklist-add', entry: { target: late, reason: 'late', since: 9_999, addedBy: 'admin@127.0.0.1' } } });
  t.not(state.blacklistVersion, before, 'the version moved');
  const second = state.blacklistPage(first.next, 100, 1 << 20);
  t.equal(second.entries.length, 51, 'the second page has the other 50 and the new one');
  t.equal(second.entries.at(-1)?.target, late, 'the new ban last, by target');
  t.equal(second.next, '', 'and it is the last page');
  t.ok(state.listed(late) && !state.listed('0'.repeat(39)), 'listed() names the targets on the list only');
});

t.test('report pages: every report once, oldest first, ties by id', async (t) => {
  const store = new Store(':memory:');
  t.teardown(() => store.close());
  const made: ReportRecord[] = [];
  store.transaction(() => {
    for (let i = 0; i < 1_234; i++) {
      const r: ReportRecord = { id: hex((i * 104_729) % 1_234, 8), reporter: hex(i, 40), fileId: hex(i, 64), reason: `report ${i}`, targets: [hex(i + 1, 40)], evidence: i % 2, time: 5_000 + Math.floor(i / 3), status: 'banned' };
      made.push(r);
      store.putReport({ ...r, stamp: [1, i + 1], statusStamp: [1, i + 1] });
    }
  });
  const all: ReportRecord[] = [];
  let after: { time: number; id: string } | undefined;
  for (;;) {
    const page = store.reportsAfter(after, 100);
    all.push(...page);
    if (page.length < 100) break;
    after = { time: page.at(-1)!.time, id: page.at(-1)!.id };
  }
  t.same(all, store.reports(), 'the pages together are reports(), in its order');
  t.equal(new Set(all.map((r) => r.id)).size, made.length, 'each report once');
  t.ok(all.every((r, i) => i === 0 || all[i - 1]!.time < r.time || (all[i - 1]!.time === r.time && all[i - 1]!.id < r.id)), 'ordered by time, then id');
});
