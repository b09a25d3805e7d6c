/**
 * The deterministic simulation of the tracker cluster (bench/cluster-sim.ts), run on every CI run: the
 * real cluster logic under random schedules of crashes, wiped disks, pauses, partitions, delays and drops,
 * with concurrent writes. Every run starts from a new random seed (printed), so CI keeps exploring; a
 * failure names its seed, and `npm run bench:sim -- --replay SEED` replays it exactly.
 * `npm run bench:sim` runs the long version (bench/results/sim.md).
 */
import t from 'tap';
import { DEFAULT_SIM, runSchedule } from '../../bench/cluster-sim.js';
import { sizeOf } from '../../bench/sim.js';

const SCHEDULES = Number(process.env.P2P_SIM_SCHEDULES ?? 600);
const base = Number(process.env.P2P_SIM_SEED ?? Math.floor(Math.random() * 1e9));

t.test(`${SCHEDULES} random schedules from seed ${base}: one main per term, nothing acknowledged lost, a main once healed, one state`, (t) => {
  const failures: string[] = [];
  const bySize: Record<number, number> = {};
  let acked = 0;
  for (let i = 0; i < SCHEDULES; i++) {
    const seed = base + i;
    const trackers = sizeOf(seed);
    const r = runSchedule(seed, { ...DEFAULT_SIM, trackers });
    bySize[trackers] = (bySize[trackers] ?? 0) + 1;
    acked += r.writes.acked;
    if (r.violations.length > 0) failures.push(`seed ${seed} (${trackers} trackers): ${r.violations.slice(0, 3).join('; ')}`);
  }
  t.comment(`schedules by cluster size: ${JSON.stringify(bySize)}; ${acked} writes acknowledged`);
  t.same(failures, [], 'every schedule keeps every guarantee (replay a failing one with npm run bench:sim -- --replay SEED)');
  t.end();
});

t.test('a seed replays exactly', (t) => {
  const a = runSchedule(base, { ...DEFAULT_SIM, trackers: 3 });
  const b = runSchedule(base, { ...DEFAULT_SIM, trackers: 3 });
  t.same(b.trace, a.trace, 'the same events in the same order');
  t.same(b.writes, a.writes, 'the same writes acknowledged');
  t.end();
});

/**
 * Seeds that once broke a guarantee, kept as regressions. Both: a main that had restarted (its holder
 * lists lost, soft state) copied its state to a backup before its first entry committed; the copy did
 * not say the lists were lost, so the backup later led without asking peers to announce again, and kept
 * lists that differed from the others' (1039638), or waited for a copy forever (3019706). And: a main
 * answered each refused append with another at once, so the snapshot the backup needed, once lost, was
 * never sent again (6017120, two trackers). And, with a majority connected and other links cut, a main
 * that handed command again and again to a better rank that reached too few trackers to win (5019, 5179,
 * 9369, 13239: five trackers). And a backup that installed a copy of the state from a main whose --data
 * had been wiped kept its own later entries and their commit index, applied them again over the copy,
 * and gave its state up again at the main's next entries, for ever (8027114).
 */
for (const seed of [1039638, 3019706, 6017120, 5019, 5179, 9369, 13239, 8027114]) {
  t.test(`seed ${seed}, which once failed, keeps every guarantee`, (t) => {
    const r = runSchedule(seed, { ...DEFAULT_SIM, trackers: sizeOf(seed) });
    t.same(r.violations, [], `no violation (replay: npm run bench:sim -- --replay ${seed})`);
    t.end();
  });
}
