/**
 * daemon/fleet-peak.ts: the most peers a tracker has seen lately, kept in its --data, so that a fleet
 * dialling in again after a restart is told the heartbeat lease of the whole fleet from its first peer.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { FLEET_PEAK_TTL_MS, FleetPeak } from '../../daemon/fleet-peak.js';
import { Store } from '../../daemon/store.js';
import { VirtualClock } from '../../protocol/clock.js';

function setup(t: Test) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-fleet-peak-'));
  const stores: Store[] = [];
  const open = (): Store => {
    const s = new Store(dir);
    stores.push(s);
    return s;
  };
  t.teardown(() => {
    for (const s of stores) s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { open, clock: new VirtualClock() };
}

t.test('a growing fleet moves the peak at once; a shrinking one is still expected back at its peak', async (t) => {
  const { open, clock } = setup(t);
  const peak = new FleetPeak(open(), clock);
  t.equal(peak.expected(1), 1, 'a first peer: nothing else known');
  t.equal(peak.expected(500), 500, 'the fleet grows: the count itself');
  t.equal(peak.expected(2000), 2000);
  t.equal(peak.expected(3), 2000, 'after the peers left (a restart): the 2,000 seen before');
});

t.test('the peak outlives a restart of the tracker, and is forgotten a day after it was last seen', async (t) => {
  const { open, clock } = setup(t);
  const first = open();
  const before = new FleetPeak(first, clock);
  before.expected(20_000);
  first.close();

  const again = new FleetPeak(open(), clock);
  t.equal(again.expected(1), 20_000, 'the first peer back after a restart is told the lease of 20,000 peers');

  clock.advance(FLEET_PEAK_TTL_MS - 60_000);
  t.equal(again.expected(1_000), 20_000, 'a fleet that shrank: the peak still counts within the day');
  clock.advance(60_000);
  t.equal(again.expected(1_000), 1_000, 'a day after the peak was last seen, only the fleet there is');
  t.equal(new FleetPeak(open(), clock).expected(10), 1_000, 'and the peak on disk is the new one');
});

t.test('a fleet that stays near its peak keeps it fresh, on disk too', async (t) => {
  const { open, clock } = setup(t);
  const peak = new FleetPeak(open(), clock);
  peak.expected(10_000);
  for (let hour = 0; hour < 48; hour++) {
    clock.advance(3600_000);
    peak.expected(9_500); // within a tenth of the peak: seen again
  }
  t.equal(new FleetPeak(open(), clock).expected(0), 10_000, 'two days on, a restart still expects the 10,000');
});

t.test('what is read from disk is checked', async (t) => {
  const { open, clock } = setup(t);
  const store = open();
  store.setMeta('fleet_peak', 'garbage');
  store.setMeta('fleet_peak_at', String(clock.wallNow()));
  t.equal(new FleetPeak(store, clock).expected(7), 7, 'an unreadable peak counts for nothing');
  store.setMeta('fleet_peak', 5000);
  store.setMeta('fleet_peak_at', String(clock.wallNow() + 3 * FLEET_PEAK_TTL_MS));
  const ahead = new FleetPeak(store, clock);
  t.equal(ahead.expected(7), 5000, 'a peak dated ahead of this clock (the clock went back) counts as seen now...');
  clock.advance(FLEET_PEAK_TTL_MS);
  t.equal(ahead.expected(7), 7, '...for a day, not until its date');
});

t.test('a fleet arriving costs a few writes (each is an fsync), and what is not yet written is on stopping', async (t) => {
  const { open, clock } = setup(t);
  const store = open();
  let writes = 0;
  const counting = { getMeta: store.getMeta.bind(store), setMeta: store.setMeta.bind(store), transaction: <T>(fn: () => T): T => (writes++, store.transaction(fn)) };
  const peak = new FleetPeak(counting, clock);
  for (let n = 1; n <= 20_000; n++) {
    peak.expected(n);
    clock.advance(0.1); // 20,000 peers in 2 s
  }
  t.ok(writes <= 3, `${writes} writes for 20,000 arrivals in 2 s`);
  peak.flush();
  t.equal(new FleetPeak(open(), clock).expected(0), 20_000, 'flushed: the whole fleet is on disk');
});
