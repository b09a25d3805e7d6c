/**
 * Scenario 2, uneven peers: ten seeders with mixed uplinks (10 to 200 Mbit/s) and added delays (1 to
 * 100 ms each way, from a delay proxy in the seeder's own host: the seeder advertises the proxy's port,
 * since the tracker pairs the advertised port with the address it sees). Efficiency against the ideal
 * from the actual uplinks, size / min(sum of uplinks, 1 Gbit/s).
 *
 * Beside the engine, where it is installed and asked for: aria2c fetching the same file from an nginx in
 * each of the same hosts, through the same caps and a delay proxy of its own with the same delay. It
 * shows what TCP leaves any downloader from far seeders within a one-second download.
 */
import { aria2cArgs, availableComparators, fetchWithAria2c, fileUri, NGINX_PORT, startNginx, type Comparator } from '../comparator.js';
import { analyzeSamples, MBIT } from '../lab.js';
import { mdTable, pct, secs } from '../report.js';
import { busyPercent, downloadRun, failedNotes, failure, freshDownload, idealSeconds, labScenario, LINK_BPS, med, perStrategy, primaryOf, strategyColor, timedSummary, wholeAndSteadyPanel, type Strategy, type TimedRun } from '../scenario.js';
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
/** The delay proxy in front of the comparator's nginx in each seeder's host. */
const NGINX_PROXY_PORT = 7001;

type UnevenRow = Strategy | Comparator;

interface UnevenRun extends Omit<TimedRun, 'strategy'> {
  strategy: UnevenRow;
  firstBytesSeconds?: number;
  /** Bytes each seeder sent, in UNEVEN_SEEDERS order. */
  bytesBySeeder?: number[];
}

export const unevenScenario = labScenario<UnevenRun, UnevenRow>('uneven', ({ opts }, file) => {
  const uplinks = UNEVEN_SEEDERS.map((s) => s.mbit * MBIT);
  const ideal = idealSeconds(file.sizeBytes, uplinks);
  const idealBps = Math.min(uplinks.reduce((a, b) => a + b, 0), LINK_BPS);
  const { comparators, programs } = availableComparators('uneven', opts.comparators, opts.log);
  const rows: UnevenRow[] = [...opts.strategies, ...comparators];
  const hosts = UNEVEN_SEEDERS.map((_, i) => `u${i + 1}`);
  return {
    rows,
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
      if (programs) {
        // The comparator's servers: nginx in each seeder's host, behind a delay proxy of the same delay.
        for (const [i, host] of hosts.entries()) {
          await startNginx(lab, programs, host, file);
          await lab.startDelayProxy(host, NGINX_PROXY_PORT, `${lab.net.host(host).ip}:${NGINX_PORT}`, UNEVEN_SEEDERS[i]!.delayMs);
        }
        opts.log(
          `uneven: comparator: ip netns exec ${lab.net.host('dl').ns} ${programs.aria2c} ${aria2cArgs({ uris: hosts.map((h) => fileUri(lab.net.host(h).ip, file.name, NGINX_PROXY_PORT)), dir: 'DIR', outName: file.name }).join(' ')}; then sync -d FILE`,
        );
      }
      const aria2cRun = async (r: number): Promise<UnevenRun> => {
        const out = await fetchWithAria2c(lab, programs!, 'dl', hosts, file, { port: NGINX_PROXY_PORT });
        const run: UnevenRun = { strategy: 'aria2c', run: r, ok: out.ok, machineBusyFraction: out.cost.machineBusyFraction };
        if (out.cost.otherBusyFraction !== undefined) run.otherBusyFraction = out.cost.otherBusyFraction;
        if (out.ok) {
          // Its wall time, process start and the sync of the file included (comparator.ts).
          run.seconds = out.seconds;
          run.efficiency = ideal / out.seconds;
          // tc counts what each uplink carried, headers and retransmissions included (6-11% more than the
          // file in all): scaled to the file's size, the shares compare with the engine's payload bytes.
          const carried = out.sentBytes.reduce((a, b) => a + b, 0);
          run.bytesBySeeder = out.sentBytes.map((b) => (carried > 0 ? (b * file.sizeBytes) / carried : 0));
        } else {
          run.error = out.error ?? 'failed';
        }
        return run;
      };
      return async (row, r) => {
        if (row === 'aria2c') return aria2cRun(r);
        const strategy = row;
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
      const summary = perStrategy(rows, runs, (all) => {
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
        ['seeder', 'uplink Mbit/s', 'added delay each way ms', 'fair share', ...rows.map((s) => `${s}: share sent`)],
        UNEVEN_SEEDERS.map((s, i) => [`u${i + 1}`, s.mbit, s.delayMs, pct(s.mbit / totalMbit), ...summary.map((x) => pct(x.medianShareBySeeder[i]))]),
      );
      const mainTable = mdTable(
        ['strategy', 'ideal s', 'median s', 'median eff.', 'min eff.', 'first bytes s (from CLI launch)', 'steady eff. (10-90%)', 'other work on the machine', 'failed runs'],
        summary.map((x) => [x.strategy, secs(ideal), secs(x.medianSeconds), pct(x.medianEfficiency), pct(x.minEfficiency), secs(x.medianFirstBytesSeconds), pct(x.medianSteadyEfficiency), busyPercent(x.medianOtherBusy), x.failed]),
      );
      const primary = primaryOf(summary);
      const aria2c = summary.find((x) => x.strategy === 'aria2c');
      const targets = [
        {
          target: `${primary.strategy}: median efficiency >= 0.85 of the ideal from the actual uplinks (${totalMbit} Mbit/s)`,
          measured: `${pct(primary.medianEfficiency)} (${secs(primary.medianSeconds)} s against ${secs(ideal)} s)${aria2c ? `; aria2c from nginx in the same hosts, same run: ${pct(aria2c.medianEfficiency)} (${secs(aria2c.medianSeconds)} s)` : ''}`,
          holds: primary.medianEfficiency >= 0.85,
        },
      ];
      const notes = [
        `The delay is added in each direction by a user-space proxy in the seeder's host (bench/lab/delay-proxy.ts), so a seeder's round trip grows by twice the delay. The seeder advertises the proxy's port: the tracker pairs the advertised port with the address it observes (daemon/tracker.ts uses only the port of --advertise).`,
        `"First bytes" is when the first verified chunk showed, from the CLI's launch: the tracker lookup, connecting to and measuring the holders (round trips of up to 200 ms here) and the manifest. TCP also needs several round trips to open its window to a far seeder, which a 1-second download does not leave it: compare the far 200 Mbit/s seeder's share with its fair share.`,
        ...(aria2c
          ? [
              `The comparator, aria2c: one nginx (sendfile) in each seeder's host behind its own delay proxy with the seeder's delay, so through the same cap and the same round trip; aria2c in the downloader's host fetches the file from all ten at once (\`--split=10 --max-connection-per-server=1\`, 1 MiB pieces). Its time is its wall time, from its launch to its exit (process start, connections and the size probe included), plus a \`sync -d\` of the file; the engine's is the daemon's own \`seconds\`. Its shares are what each seeder host's uplink sent meanwhile (tc), scaled so that they add up to the file (tc counts headers and retransmissions too). It checks nothing; the engine verifies every chunk.`,
            ]
          : []),
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
        params: { sizeMiB: opts.sizeMiB, runs: opts.runs, strategies: opts.strategies, comparators, seeders: UNEVEN_SEEDERS, idealSeconds: ideal },
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
