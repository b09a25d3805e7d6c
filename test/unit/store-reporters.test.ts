/**
 * daemon/store.ts: who reported a peer, as the `threshold:K` report policy counts them. Read by SQLite
 * from the reports' JSON targets (json_each), where the tracker used to read every report into
 * JavaScript and filter them, 0.7-1.0 s at 100,000 reports, in the main's turn, for each peer a report
 * names. The answer must be what that filter gave: each reporter once, whatever its report's status.
 */
import t from 'tap';
import fc from 'fast-check';
import { Store } from '../../daemon/store.js';

const peer = (n: number): string => n.toString(16).padStart(40, '0');

t.test('reportersOf gives every distinct reporter of a target, as filtering every report did', (t) => {
  const report = fc.record({
    reporter: fc.integer({ min: 0, max: 5 }),
    targets: fc.uniqueArray(fc.integer({ min: 0, max: 6 }), { minLength: 1, maxLength: 4 }),
    status: fc.constantFrom('pending', 'blacklisted', 'partly blacklisted', 'dismissed'),
  });
  fc.assert(
    fc.property(fc.array(report, { maxLength: 30 }), (reports) => {
      const store = new Store(':memory:');
      try {
        store.transaction(() =>
          reports.forEach((r, i) =>
            store.putReport({ id: `1:${i}:${peer(r.reporter)}`, reporter: peer(r.reporter), fileId: 'ab'.repeat(32), reason: 'bad data', targets: r.targets.map(peer), evidence: 1, time: i, status: r.status, stamp: [1, i], statusStamp: [1, i] }),
          ),
        );
        for (let target = 0; target <= 7; target++) {
          const filtered = new Set(store.reports().filter((r) => r.targets.includes(peer(target))).map((r) => r.reporter));
          const got = store.reportersOf(peer(target));
          if (got.length !== filtered.size || !got.every((r) => filtered.has(r))) return false;
        }
        return true;
      } finally {
        store.close();
      }
    }),
    { numRuns: 200 },
  );
  t.pass('200 random sets of reports: the same reporters for every target, each once');
  t.end();
});

t.test('a target no report names has no reporters, and a name inside another is no match', (t) => {
  const store = new Store(':memory:');
  t.teardown(() => store.close());
  store.putReport({ id: '1:1:a', reporter: peer(1), fileId: 'ab'.repeat(32), reason: 'x', targets: [peer(2), `${peer(3)}x`], evidence: 0, time: 1, status: 'pending', stamp: [1, 1], statusStamp: [1, 1] });
  t.same(store.reportersOf(peer(9)), []);
  t.same(store.reportersOf(peer(3)), [], 'only a whole target matches');
  t.same(store.reportersOf(peer(2)), [peer(1)]);
  t.end();
});
