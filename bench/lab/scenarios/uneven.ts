/**
 * Scenario 2, uneven peers: ten seeders with mixed uplinks (10 to 200 Mbit/s) and added delays (1 to
 * 100 ms each way, from a delay proxy in the seeder's own host: the seeder advertises the proxy's port,
 * since the tracker pairs the advertised port with the address it sees). Efficiency against the ideal
 * from the actual uplinks, size / min(sum of uplinks, 1 Gbit/s).
 */
import { analyzeSamples, MBIT } from '../lab.js';
import { mdTable, pct, secs } from '../report.js';
import { busyPercent, downloadRun, failedNotes, failure, freshDownload, idealSeconds, labScenario, LINK_BPS, med, perStrategy, primaryOf, strategyColor, timedSummary, wholeAndSteadyPanel, type TimedRun } from '../scenario.js';
import { COLORS, renderChart } from '../svg.js';

/** Uplink and one-way added delay per seeder: fast-and-far, slow-and-near and everything between. */
export const UNEVEN_SEEDERS: Array<{ mbit: number; delayMs: number }> = [
  { mbit: 200, delayMs: 100 },
  { mbit: 200, delayMs: 5 },
  { mbit: 150, delayMs: 50 },
  { mbit: 100, delayMs: 1 },
  { mbit: 100, delayMs: 20 },
  { mbit: 75, delayMs: 10 },
  { mbit: 50, delayMs: 2 },
  { mbit: 25, delayMs: 30 },
  { mbit: 20, delayMs: 75 },
  { mbit: 10, delayMs: 1 },
];
const PROXY_PORT = 7000;

interface UnevenRun extends TimedRun {
  firstBytesSeconds?: number;
  /** Bytes each seeder sent, in UNEVEN_SEEDERS order. */
  bytesBySeeder?: number[];
}

export const unevenScenario = labScenario<UnevenRun>('uneven', ({ opts }, file) => {
  const uplinks = UNEVEN_SEEDERS.map((s) => s.mbit * MBIT);
  const ideal = idealSeconds(file.sizeBytes, uplinks);
  const idealBps = Math.min(uplinks.reduce((a, b) => a + b, 0), LINK_BPS);
  return {
    async prepare(lab) {
      lab.addHost('dl', { upBps: LINK_BPS, downBps: LINK_BPS });
      UNEVEN_SEEDERS.forEach((s, i) => lab.addHost(`u${i + 1}`, { upBps: s.mbit * MBIT }));
      opts.log(`uneven: starting ${UNEVEN_SEEDERS.length} seeders behind delay proxies`);
      const seeders = await lab.startPeers(UNEVEN_SEEDERS.length, (i) => `u${i + 1}`, (i) => `u${i + 1}`, { advertisePort: PROXY_PORT });
      for (const [i, s] of seeders.entries()) {
        const st = await lab.waitReady(s);
        await lab.startDelayProxy(s.host, PROXY_PORT, st.listen, UNEVEN_SEEDERS[i]!.delayMs);
        await lab.share(s, file.path);
      }
      const byAddress = new Map(seeders.map((s, i) => [`${s.ip}:${PROXY_PORT}`, i]));
      return async (strategy, r) => {
        const { out, ok } = await freshDownload(lab, file, seeders.length, strategy);
        const run: UnevenRun = downloadRun(strategy, r, out, ok);
        const res = out.result;
        if (ok && res) {
          const { firstBytesSeconds, steadyBitsPerSec } = analyzeSamples(out.samples);
          run.seconds = res.seconds;
          run.efficiency = ideal / res.seconds;
          if (firstBytesSeconds !== undefined) run.firstBytesSeconds = firstBytesSeconds;
          if (steadyBitsPerSec !== undefined) run.steadyEfficiency = steadyBitsPerSec / idealBps;
          const bytes = Array<number>(seeders.length).fill(0);
          for (const p of res.peers) {
            const i = byAddress.get(p.address);
            if (i !== undefined) bytes[i]! += p.bytes;
          }
          run.bytesBySeeder = bytes;
        } else {
          run.error = failure(out);
        }
        return run;
      };
    },
    describe: (run) => (run.ok ? `${run.seconds!.toFixed(2)} s, efficiency ${run.efficiency!.toFixed(2)}` : `FAILED ${run.error}`),
    report(runs) {
      const summary = perStrategy(opts.strategies, runs, (all) => {
        const rs = all.filter((r) => r.ok);
        return {
          runs: all.length,
          ...timedSummary(all),
          medianFirstBytesSeconds: med(rs.map((r) => r.firstBytesSeconds)),
          /** Median share of the file each seeder sent, against its share of the total uplink. */
          medianShareBySeeder: UNEVEN_SEEDERS.map((_, i) => med(rs.map((r) => (r.bytesBySeeder?.[i] ?? 0) / file.sizeBytes))),
        };
      });
      const totalMbit = UNEVEN_SEEDERS.reduce((a, s) => a + s.mbit, 0);
      const seederTable = mdTable(
        ['seeder', 'uplink Mbit/s', 'added delay each way ms', 'fair share', ...opts.strategies.map((s) => `${s}: share sent`)],
        UNEVEN_SEEDERS.map((s, i) => [`u${i + 1}`, s.mbit, s.delayMs, pct(s.mbit / totalMbit), ...summary.map((x) => pct(x.medianShareBySeeder[i]))]),
      );
      const mainTable = mdTable(
        ['strategy', 'ideal s', 'median s', 'median eff.', 'min eff.', 'first bytes s (from CLI launch)', 'steady eff. (10-90%)', 'other work on the machine', 'failed runs'],
        summary.map((x) => [x.strategy, secs(ideal), secs(x.medianSeconds), pct(x.medianEfficiency), pct(x.minEfficiency), secs(x.medianFirstBytesSeconds), pct(x.medianSteadyEfficiency), busyPercent(x.medianOtherBusy), x.failed]),
      );
      const primary = primaryOf(summary);
      const targets = [
        {
          target: `${primary.strategy}: median efficiency >= 0.85 of the ideal from the actual uplinks (${totalMbit} Mbit/s)`,
          measured: `${pct(primary.medianEfficiency)} (${secs(primary.medianSeconds)} s against ${secs(ideal)} s)`,
          holds: primary.medianEfficiency >= 0.85,
        },
      ];
      const notes = [
        `The delay is added in each direction by a user-space proxy in the seeder's host (bench/lab/delay-proxy.ts), so a seeder's round trip grows by twice the delay. The seeder advertises the proxy's port: the tracker pairs the advertised port with the address it observes (daemon/tracker.ts uses only the port of --advertise).`,
        `"First bytes" is when the first verified chunk showed, from the CLI's launch: the tracker lookup, connecting to and measuring the holders (round trips of up to 200 ms here) and the manifest. TCP also needs several round trips to open its window to a far seeder, which a 1-second download does not leave it: compare the far 200 Mbit/s seeder's share with its fair share.`,
        ...failedNotes(runs),
      ];

      const svg = renderChart(`Lab 2: uneven peers (${opts.sizeMiB} MiB, ${UNEVEN_SEEDERS.length} seeders, ${totalMbit} Mbit/s in total)`, `medians of ${opts.runs} run(s); uplinks 10-200 Mbit/s, added delays 1-100 ms each way`, [
        wholeAndSteadyPanel(summary, 'Efficiency against the ideal from the actual uplinks', { y: 0.85, label: 'target 0.85' }),
        {
          kind: 'bar',
          title: 'Share of the file each seeder sent (seeder: uplink in Mbit/s, delay each way)',
          yLabel: 'share of the file',
          categories: UNEVEN_SEEDERS.map((s) => `${s.mbit}M\n${s.delayMs} ms`),
          groups: [
            { name: 'fair share', color: COLORS.ideal, values: UNEVEN_SEEDERS.map((s) => s.mbit / totalMbit) },
            ...summary.map((x) => ({ name: x.strategy, color: strategyColor(x.strategy), values: x.medianShareBySeeder })),
          ],
          format: (v) => v.toFixed(2),
        },
      ]);
      return {
        title: 'uneven peers (scenario 2): mixed uplinks and latencies',
        setup: `Ten seeder hosts, uplinks capped with tbf at ${UNEVEN_SEEDERS.map((s) => s.mbit).join(', ')} Mbit/s and reached through a delay proxy adding ${UNEVEN_SEEDERS.map((s) => s.delayMs).join(', ')} ms each way; the downloader's link 1 Gbit/s. A fresh downloading p2p-peerd per run fetches one ${opts.sizeMiB} MiB file with \`p2p get\`.`,
        params: { sizeMiB: opts.sizeMiB, runs: opts.runs, strategies: opts.strategies, seeders: UNEVEN_SEEDERS, idealSeconds: ideal },
        summary,
        targets,
        notes,
        tables: [
          { title: 'Time and efficiency', markdown: mainTable },
          { title: 'Who sent what (median share of the file)', markdown: seederTable },
        ],
        svg,
      };
    },
  };
});
