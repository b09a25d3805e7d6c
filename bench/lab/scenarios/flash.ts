/**
 * Scenario 5, flash crowd: one seeder (100 Mbit/s up) and K downloaders (100 Mbit/s up, 1 Gbit/s down)
 * that all run `p2p get` at the same moment. Target: the last of them is done within 1.5 times the time
 * a single download from that seeder takes (measured first, alone). Only swarming can do it: the seeder
 * alone would need K times as long.
 */
import os from 'node:os';
import { labCpuSeconds } from '../cpu-account.js';
import { waitQuiet } from '../../harness.js';
import { control, LAB_QUIET, MBIT, type GetOutcome, type LabPeer } from '../lab.js';
import { mdTable, pct, secs } from '../report.js';
import { completed, failure, forEachRun, labScenario, med, perStrategy, primaryOf, sha256File, strategyColor, type Strategy } from '../scenario.js';
import { COLORS, renderChart } from '../svg.js';

const UP_BPS = 100 * MBIT;
const DOWN_BPS = 1000 * MBIT;

interface CrowdMember {
  name: string;
  ok: boolean;
  intact: boolean;
  error?: string;
  /** Seconds from the common start until its `p2p get` exited. */
  finishedAtSeconds: number;
  seconds?: number;
  bytesFromSeeder?: number;
  bytesFromPeers?: number;
}

interface FlashRun {
  strategy: Strategy;
  run: number;
  members: CrowdMember[];
  lastFinishedSeconds: number;
  medianFinishedSeconds: number;
  /** Seeder bytes sent during the run / file size: K means no swarming at all, about 1 is perfect. */
  seederCopies: number;
  completed: number;
  /** CPU seconds all the lab's processes used during the crowd run, and that / cores: no crowd finishes sooner. */
  labCpuSeconds?: number;
  twoCoreBoundSeconds?: number;
}

export const flashScenario = labScenario<FlashRun>('flash', ({ opts }, file) => {
  const K = opts.crowd;
  const singles: Array<{ run: number; strategy: Strategy; seconds?: number; wallSeconds: number; ok: boolean }> = [];
  return {
    async prepare(lab) {
      lab.addHost('seed', { upBps: UP_BPS });
      for (let i = 1; i <= K; i++) lab.addHost(`c${i}`, { upBps: UP_BPS, downBps: DOWN_BPS });
      const [seeder] = await lab.startPeers(1, () => 'seed', () => 'seed');
      await lab.share(seeder!, file.path);
      const fresh = async (name: string): Promise<LabPeer> => lab.startPeer(name, name);

      // The reference: one download from the seeder alone.
      await forEachRun(Math.min(opts.runs, 2), opts.strategies, async (strategy, r) => {
        const one = await fresh('c1');
        await lab.waitHolders(one, file.name, 1);
        const out = await lab.get(one, file.name, { strategy, sampleMs: 0 });
        const ok = out.code === 0 && out.result !== undefined;
        singles.push({ run: r, strategy, ok, wallSeconds: out.wallSeconds, ...(ok ? { seconds: out.result!.seconds } : {}) });
        opts.log(`flash: single download (${strategy}) run ${r}: ${ok ? `${out.result!.seconds.toFixed(2)} s` : `FAILED ${out.stderr}`}`);
        await lab.stop(one.proc);
        await lab.removePeerFiles(one);
      });

      return async (strategy, r) => {
        opts.log(`flash: starting ${K} downloaders`);
        const crowd = await lab.startPeers(K, (i) => `c${i + 1}`, (i) => `c${i + 1}`);
        await lab.waitHolders(crowd[0]!, file.name, 1);
        const sentBefore = (await control(seeder!.socket, 'status', {})).bytesSent;
        await waitQuiet(10_000, LAB_QUIET);
        const cpuBefore = labCpuSeconds();
        const t0 = performance.now();
        // Waiting for quiet once for all of them: each waiting on its own would stagger the start.
        const outs: GetOutcome[] = await Promise.all(crowd.map((c) => lab.get(c, file.name, { strategy, sampleMs: 0, quietWaitMs: 0 })));
        const cpuAfter = labCpuSeconds();
        const seederCopies = ((await control(seeder!.socket, 'status', {})).bytesSent - sentBefore) / file.sizeBytes;
        const seedAddress = seeder!.ip;
        const members: CrowdMember[] = [];
        for (const [i, out] of outs.entries()) {
          const res = out.result;
          const ok = completed(out, file);
          const m: CrowdMember = { name: crowd[i]!.name, ok, intact: false, finishedAtSeconds: (out.endedAt - t0) / 1000 };
          if (ok && res) {
            m.intact = (await sha256File(res.path)) === file.sha256;
            m.seconds = res.seconds;
            m.bytesFromSeeder = res.peers.filter((p) => p.address.startsWith(`${seedAddress}:`)).reduce((a, p) => a + p.bytes, 0);
            m.bytesFromPeers = res.peers.filter((p) => !p.address.startsWith(`${seedAddress}:`)).reduce((a, p) => a + p.bytes, 0);
          } else {
            m.error = failure(out);
          }
          members.push(m);
        }
        const finished = members.map((m) => m.finishedAtSeconds);
        const run: FlashRun = {
          strategy,
          run: r,
          members,
          lastFinishedSeconds: Math.max(...finished),
          medianFinishedSeconds: med(finished),
          seederCopies,
          completed: members.filter((m) => m.ok && m.intact).length,
        };
        if (cpuBefore !== undefined && cpuAfter !== undefined) {
          run.labCpuSeconds = cpuAfter - cpuBefore;
          run.twoCoreBoundSeconds = run.labCpuSeconds / os.cpus().length;
        }
        await Promise.all(crowd.map(async (c) => {
          await lab.stop(c.proc);
          await lab.removePeerFiles(c);
        }));
        return run;
      };
    },
    describe: (run) => `${run.completed} of ${K} done intact; last at ${run.lastFinishedSeconds.toFixed(1)} s, median ${run.medianFinishedSeconds.toFixed(1)} s; the seeder sent ${run.seederCopies.toFixed(2)} copies`,
    report(runs) {
      const summary = perStrategy(opts.strategies, runs, (rs, s) => {
        const single = med(singles.filter((x) => x.strategy === s && x.ok).map((x) => x.seconds));
        const last = med(rs.map((r) => r.lastFinishedSeconds));
        return {
          singleSeconds: single,
          medianLastFinishedSeconds: last,
          medianOfMedianFinishedSeconds: med(rs.map((r) => r.medianFinishedSeconds)),
          ratio: last / single,
          medianSeederCopies: med(rs.map((r) => r.seederCopies)),
          medianTwoCoreBoundSeconds: med(rs.map((r) => r.twoCoreBoundSeconds)),
          completed: rs.reduce((a, r) => a + r.completed, 0),
          attempted: rs.length * K,
        };
      });
      const mainTable = mdTable(
        ['strategy', 'single download s', 'last of the crowd done at s', 'median member done at s', 'last / single', 'copies the seeder sent', 'lab CPU s / 2 cores', 'completed intact'],
        summary.map((x) => [x.strategy, secs(x.singleSeconds), secs(x.medianLastFinishedSeconds), secs(x.medianOfMedianFinishedSeconds), pct(x.ratio), secs(x.medianSeederCopies), secs(x.medianTwoCoreBoundSeconds), `${x.completed} of ${x.attempted}`]),
      );
      const lastRun = runs.find((r) => r.strategy === (opts.strategies.includes('adaptive') ? 'adaptive' : opts.strategies[0])) ?? runs[0];
      const memberTable = lastRun
        ? mdTable(
            ['member', 'done at s', 'its own s', 'from the seeder MiB', 'from other downloaders MiB', 'intact'],
            lastRun.members.map((m) => [m.name, secs(m.finishedAtSeconds), secs(m.seconds), m.bytesFromSeeder !== undefined ? (m.bytesFromSeeder / 2 ** 20).toFixed(0) : 'n/a', m.bytesFromPeers !== undefined ? (m.bytesFromPeers / 2 ** 20).toFixed(0) : 'n/a', m.ok ? (m.intact ? 'yes' : '**NO**') : `failed: ${m.error ?? ''}`]),
          )
        : '';
      const primary = primaryOf(summary);
      const targets = [
        {
          target: `${primary.strategy}: all ${K} done within 1.5 x the single download's time`,
          measured: `last done at ${secs(primary.medianLastFinishedSeconds)} s = ${pct(primary.ratio)} x the single download (${secs(primary.singleSeconds)} s); ${primary.completed} of ${primary.attempted} completed intact`,
          holds: primary.ratio <= 1.5 && primary.completed === primary.attempted,
        },
      ];
      const notes = [
        `Times are from the moment all ${K} \`p2p get\` processes were launched; on 2 cores, starting ${K} CLI processes at once takes a while by itself (each node process needs ~0.1-0.2 CPU s to start).`,
        `"Copies the seeder sent": the seeder's bytesSent during the crowd run divided by the file size. ${K} would mean every member fetched everything from the seeder (no swarming); the ideal swarm needs just over 1.`,
      ];
      notes.push(
        `"lab CPU s / 2 cores": the CPU time all the lab's processes (${K + 1} daemons, ${K} CLIs, the tracker) used during the crowd run, divided by the cores: the crowd cannot finish sooner on this machine, whatever the engine does. ${K} x ${opts.sizeMiB} MiB must be received, verified and written, and most of it also read, hashed, signed and sent by a member.`,
      );
      for (const r of runs) {
        const late = r.members.filter((m) => m.finishedAtSeconds > r.medianFinishedSeconds + 20);
        if (late.length) {
          notes.push(
            `${r.strategy} run ${r.run}: ${late.length} member(s) (${late.map((m) => m.name).join(', ')}) finished more than 20 s after the median member (${secs(r.medianFinishedSeconds)} s), at ${late.map((m) => secs(m.finishedAtSeconds)).join(', ')} s.`,
          );
        }
      }

      const svg = renderChart(`Lab 5: flash crowd, 1 seeder and ${K} downloaders (${opts.sizeMiB} MiB)`, `all uplinks 100 Mbit/s, downlinks 1 Gbit/s; ${opts.runs} crowd run(s) per strategy`, [
        {
          kind: 'bar',
          title: 'When each member of the crowd was done (last crowd run of each strategy)',
          yLabel: 'seconds from the common start',
          categories: Array.from({ length: K }, (_, i) => `c${i + 1}`),
          groups: opts.strategies.map((s) => {
            const r = [...runs].reverse().find((x) => x.strategy === s);
            return { name: s, color: strategyColor(s), values: Array.from({ length: K }, (_, i) => r?.members.find((m) => m.name === `c${i + 1}`)?.finishedAtSeconds) };
          }),
          refLines: [
            ...(Number.isFinite(primary.singleSeconds) ? [{ y: primary.singleSeconds, label: 'single download', color: COLORS.ideal }] : []),
            ...(Number.isFinite(primary.singleSeconds) ? [{ y: 1.5 * primary.singleSeconds, label: 'target 1.5 x single' }] : []),
          ],
        },
      ]);
      return {
        title: `flash crowd (scenario 5): 1 seeder and ${K} downloaders at once`,
        setup: `One seeder host and ${K} downloader hosts, every uplink capped at 100 Mbit/s and every downloader's downlink at 1 Gbit/s (tbf). First a single download from the seeder alone (the reference), then ${K} fresh downloading daemons all run \`p2p get\` at the same moment; ${opts.sizeMiB} MiB file.`,
        params: { sizeMiB: opts.sizeMiB, runs: opts.runs, strategies: opts.strategies, crowd: K, upMbit: 100, downMbit: 1000 },
        runs: [...singles.map((s) => ({ kind: 'single', ...s })), ...runs.map((r) => ({ kind: 'crowd', ...r }))],
        summary,
        targets,
        notes,
        tables: [
          { title: 'Summary (medians over the runs)', markdown: mainTable },
          ...(lastRun ? [{ title: `Member by member (${lastRun.strategy}, run ${lastRun.run})`, markdown: memberTable }] : []),
        ],
        svg,
      };
    },
  };
});
