/**
 * Scenario 4, failure: nine seeders at 100 Mbit/s; when 40% of the file is verified, the three seeders
 * that have sent the most so far (the ones the download leans on) are killed with SIGKILL. The download
 * must complete, intact (SHA-256 of the whole file compared with the original), at >= 0.8 of the ideal
 * for the six survivors, size / min(6 x 100 Mbit/s, 1 Gbit/s).
 */
import { control, MBIT, type LabPeer } from '../lab.js';
import { mdTable, pct, secs } from '../report.js';
import { efficiencyPanel, failedNotes, failure, freshDownload, idealSeconds, labScenario, LINK_BPS, med, minOf, perStrategy, primaryOf, type Strategy } from '../scenario.js';
import { renderChart } from '../svg.js';

const SEEDERS = 9;
const KILLED = 3;
const KILL_AT = 0.4;
const SEEDER_BPS = 100 * MBIT;

interface FailureRun {
  strategy: Strategy;
  run: number;
  ok: boolean;
  intact: boolean;
  error?: string;
  seconds?: number;
  killedAtSeconds?: number;
  killedAtFraction?: number;
  killed: string[];
  /** Against size / (survivors' uplinks): the issue's measure. */
  survivorEfficiency?: number;
  /** Against the piecewise ideal: all nine until the kill, the six after. */
  piecewiseEfficiency?: number;
  peersUsed?: number;
}

export const failureScenario = labScenario<FailureRun>('failure', ({ opts }, file) => {
  const survivorIdeal = idealSeconds(file.sizeBytes, Array(SEEDERS - KILLED).fill(SEEDER_BPS));
  const allBps = Math.min(SEEDERS * SEEDER_BPS, LINK_BPS);
  const survivorBps = Math.min((SEEDERS - KILLED) * SEEDER_BPS, LINK_BPS);
  return {
    async prepare(lab) {
      lab.addHost('dl', { upBps: LINK_BPS, downBps: LINK_BPS });
      for (let i = 1; i <= SEEDERS; i++) lab.addHost(`f${i}`, { upBps: SEEDER_BPS });
      opts.log(`failure: starting ${SEEDERS} seeders`);
      const seeders: LabPeer[] = await lab.startPeers(SEEDERS, (i) => `f${i + 1}`, (i) => `f${i + 1}`);
      for (const s of seeders) await lab.share(s, file.path);
      return async (strategy, r) => {
        const run: FailureRun = { strategy, run: r, ok: false, intact: false, killed: [] };
        let killing: Promise<void> | undefined;
        const { out, ok, intact } = await freshDownload(lab, file, SEEDERS, strategy, {
          sampleMs: 50,
          onSample: async (s) => {
            if (killing || s.bytes < KILL_AT * s.total) return;
            run.killedAtSeconds = s.t;
            run.killedAtFraction = s.bytes / s.total;
            // Kill the ones carrying the download: the most bytes sent so far.
            const sent = await Promise.all(seeders.map(async (p) => ({ p, sent: (await control(p.socket, 'status', {}, 2000).catch(() => undefined))?.bytesSent ?? 0 })));
            const victims = sent.sort((a, b) => b.sent - a.sent).slice(0, KILLED).map((x) => x.p);
            run.killed = victims.map((v) => v.name);
            killing = Promise.all(victims.map((v) => lab.kill(v.proc))).then(() => undefined);
            await killing;
          },
        }, { verify: true });
        const res = out.result;
        run.ok = ok;
        if (ok && res) {
          run.intact = intact;
          run.seconds = res.seconds;
          run.survivorEfficiency = survivorIdeal / res.seconds;
          if (run.killedAtFraction !== undefined) {
            const before = run.killedAtFraction * file.sizeBytes * 8;
            const after = file.sizeBytes * 8 - before;
            run.piecewiseEfficiency = (before / allBps + after / survivorBps) / res.seconds;
          }
          run.peersUsed = res.peers.filter((p) => p.bytes > 0).length;
        } else {
          run.error = failure(out);
        }
        // Bring the killed seeders back (same identity and data: no re-hash) for the next run.
        for (const name of run.killed) {
          const i = seeders.findIndex((s) => s.name === name);
          seeders[i] = await lab.startPeer(name, seeders[i]!.host, { keepData: true });
        }
        return run;
      };
    },
    describe: (run) => (run.ok ? `${run.seconds!.toFixed(2)} s, intact ${run.intact}, survivors' efficiency ${run.survivorEfficiency!.toFixed(2)}, killed ${run.killed.join(',')} at ${((run.killedAtFraction ?? 0) * 100).toFixed(0)}%` : `FAILED ${run.error}`),
    report(runs) {
      const summary = perStrategy(opts.strategies, runs, (rs) => {
        const ok = rs.filter((r) => r.ok);
        return {
          runs: rs.length,
          completed: ok.length,
          intact: ok.filter((r) => r.intact).length,
          medianSeconds: med(ok.map((r) => r.seconds)),
          medianSurvivorEfficiency: med(ok.map((r) => r.survivorEfficiency)),
          minSurvivorEfficiency: minOf(ok.map((r) => r.survivorEfficiency)),
          medianPiecewiseEfficiency: med(ok.map((r) => r.piecewiseEfficiency)),
          medianKilledAtSeconds: med(rs.map((r) => r.killedAtSeconds)),
        };
      });
      const mainTable = mdTable(
        ['strategy', 'runs', 'completed', 'intact', 'median s', "survivors' ideal s", "eff. vs survivors' ideal", 'min', 'eff. vs piecewise ideal', 'kill at s (from CLI launch)'],
        summary.map((x) => [x.strategy, x.runs, x.completed, x.intact, secs(x.medianSeconds), secs(survivorIdeal), pct(x.medianSurvivorEfficiency), pct(x.minSurvivorEfficiency), pct(x.medianPiecewiseEfficiency), secs(x.medianKilledAtSeconds)]),
      );
      const runTable = mdTable(
        ['strategy', 'run', 's', 'intact', 'killed', 'at', "eff. vs survivors' ideal", 'peers used'],
        runs.map((r) => [r.strategy, r.run, secs(r.seconds), r.ok ? (r.intact ? 'yes' : '**NO**') : `failed: ${r.error ?? ''}`, r.killed.join(', '), r.killedAtFraction !== undefined ? `${(r.killedAtFraction * 100).toFixed(0)}%` : 'n/a', pct(r.survivorEfficiency), r.peersUsed ?? 'n/a']),
      );
      const primary = primaryOf(summary);
      const targets = [
        { target: `${primary.strategy}: every download completes, intact`, measured: `${primary.completed} of ${primary.runs} completed, ${primary.intact} intact`, holds: primary.completed === primary.runs && primary.intact === primary.runs },
        {
          target: `${primary.strategy}: median efficiency >= 0.8 of the ideal for the ${SEEDERS - KILLED} survivors`,
          measured: `${pct(primary.medianSurvivorEfficiency)} (${secs(primary.medianSeconds)} s against ${secs(survivorIdeal)} s)`,
          holds: primary.medianSurvivorEfficiency >= 0.8,
        },
      ];
      const notes = [
        `"The ideal for the survivors" is read as size / min(6 x 100 Mbit/s, 1 Gbit/s), the whole file at the survivors' rate (lenient: the nine were all there for the first 40%). The piecewise ideal (nine seeders until the kill, six after) is stricter and shown beside it.`,
        ...failedNotes(runs),
      ];
      const svg = renderChart(`Lab 4: ${KILLED} of ${SEEDERS} seeders killed (SIGKILL) at ${KILL_AT * 100}% (${opts.sizeMiB} MiB)`, `medians of ${opts.runs} run(s); seeders at 100 Mbit/s, downloader link 1 Gbit/s`, [
        efficiencyPanel(summary, {
          title: 'Efficiency',
          yMax: 1.2,
          categories: ["against the survivors' ideal", 'against the piecewise ideal'],
          values: (x) => [x.medianSurvivorEfficiency, x.medianPiecewiseEfficiency],
          target: { y: 0.8, label: 'target 0.8' },
        }),
      ]);
      return {
        title: 'failure (scenario 4): a third of the seeders killed mid-download',
        setup: `Nine seeder hosts at 100 Mbit/s (tbf), the downloader's link 1 Gbit/s. A fresh downloading p2p-peerd per run fetches one ${opts.sizeMiB} MiB file with \`p2p get\`; at ${KILL_AT * 100}% verified (polled every 50 ms on its control socket), the ${KILLED} seeders that have sent the most are killed with SIGKILL, and restarted after the run for the next one.`,
        params: { sizeMiB: opts.sizeMiB, runs: opts.runs, strategies: opts.strategies, seeders: SEEDERS, killed: KILLED, killAt: KILL_AT, seederMbit: 100 },
        summary,
        targets,
        notes,
        tables: [
          { title: 'Summary (medians)', markdown: mainTable },
          { title: 'Run by run', markdown: runTable },
        ],
        svg,
      };
    },
  };
});
