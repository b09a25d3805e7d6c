/**
 * Scenario 6, resume: four seeders at 100 Mbit/s; the downloading daemon is killed with SIGKILL when half
 * the file is verified, then restarted on the same --data. It resumes the download by itself; then, as a
 * user would, `p2p get` is run again. Counted: chunks fetched twice = chunks verified before the kill
 * that were not taken over by the resumed download (target: at most 2).
 *
 * To know exactly how many chunks were verified at the kill, the seeders are paused (SIGSTOP) just
 * before it, the downloader's count is read once it stops moving, then it is killed and the seeders
 * continued (SIGCONT). Chunks that were only partly received at the kill are not "fetched"; the bytes
 * they cost show in the seeders' total sent, reported beside.
 */
import fs from 'node:fs';
import { control, MBIT, type LabPeer } from '../lab.js';
import { mdTable, secs } from '../report.js';
import { labScenario, LINK_BPS, maxOf, med, sha256File, type Strategy } from '../scenario.js';
import { sleep, until } from '../../harness.js';
import { COLORS, renderChart } from '../svg.js';

const SEEDERS = 4;
const KILL_AT = 0.5;
const SEEDER_BPS = 100 * MBIT;
const CHUNK = 1024 * 1024;

interface ResumeRun {
  strategy: Strategy;
  run: number;
  ok: boolean;
  intact: boolean;
  error?: string;
  killedAtFraction?: number;
  verifiedAtKill?: number;
  resumedChunks?: number;
  fetchedTwice?: number;
  /** Chunks fetched after the restart (from the transfer record), and the file's chunk count. */
  fetchedAfterRestart?: number;
  chunks: number;
  /** Every chunk the seeders handed to the network over both halves, minus the file's chunk count. */
  seederChunksBeyondOne?: number;
  resumedSeconds?: number;
  /** What `p2p get` run again after the restart said. */
  getAgain?: { code: number; message: string };
}

function resumedFromLog(logPath: string): number | undefined {
  for (const line of fs.readFileSync(logPath, 'utf8').split('\n')) {
    if (!line.includes('resuming a partial download')) continue;
    try {
      // { chunks } in older engines; { journaled, recovered } since unjournaled chunks are re-verified.
      const j = JSON.parse(line) as { chunks?: number; journaled?: number; recovered?: number };
      if (typeof j.chunks === 'number') return j.chunks;
      if (typeof j.journaled === 'number') return j.journaled + (j.recovered ?? 0);
    } catch {
      // not a JSON line
    }
  }
  return undefined;
}

export const resumeScenario = labScenario<ResumeRun>('resume', ({ opts }, file) => {
  const chunks = Math.ceil(file.sizeBytes / CHUNK);
  return {
    async prepare(lab) {
      lab.addHost('dl', { upBps: LINK_BPS, downBps: LINK_BPS });
      for (let i = 1; i <= SEEDERS; i++) lab.addHost(`r${i}`, { upBps: SEEDER_BPS });
      const seeders: LabPeer[] = await lab.startPeers(SEEDERS, (i) => `r${i + 1}`, (i) => `r${i + 1}`);
      for (const s of seeders) await lab.share(s, file.path);
      const totalSent = async (): Promise<number> => (await Promise.all(seeders.map((s) => control(s.socket, 'status', {})))).reduce((a, st) => a + st.bytesSent, 0);
      return async (strategy, r) => {
        const run: ResumeRun = { strategy, run: r, ok: false, intact: false, chunks };
        let dl = await lab.startPeer('dl', 'dl', { strategy });
        await lab.waitHolders(dl, file.name, SEEDERS);
        const sentBefore = await totalSent();
        let killed = false;
        let finishedFirst = false;
        await lab.get(dl, file.name, {
          strategy,
          sampleMs: 20,
          onSample: async (s) => {
            if (killed || s.bytes < KILL_AT * s.total) return;
            killed = true;
            for (const p of seeders) p.proc.child.kill('SIGSTOP');
            try {
              // Let what already arrived be verified and written, then read the count.
              let last = -1;
              let bytes = s.bytes;
              while (bytes !== last) {
                last = bytes;
                await sleep(250);
                const st = await control(dl.socket, 'status', {});
                // Gone from the list: what was already in flight completed it (a small file).
                if (st.transfers.length === 0) finishedFirst = true;
                bytes = st.transfers[0]?.bytes ?? last;
              }
              run.killedAtFraction = bytes / s.total;
              run.verifiedAtKill = Math.round(bytes / CHUNK);
              await lab.kill(dl.proc);
            } finally {
              for (const p of seeders) p.proc.child.kill('SIGCONT');
            }
          },
        });
        if (!killed || finishedFirst) {
          run.error = 'the download finished before it could be killed (the file is too small for this scenario)';
          await lab.stop(dl.proc);
          await lab.removePeerFiles(dl);
          return run;
        }
        // Restart on the same data: it resumes by itself. Then do what a user would: p2p get again.
        dl = await lab.startPeer('dl', 'dl', { strategy, keepData: true });
        const again = await lab.get(dl, file.name, { strategy, overwrite: false, sampleMs: 0 });
        const present = (again.result as { alreadyPresent?: boolean } | undefined)?.alreadyPresent === true;
        run.getAgain = { code: again.code, message: again.code === 0 ? (present ? 'ok: already there (the daemon had finished resuming)' : `ok: resumedChunks ${again.result?.resumedChunks}`) : again.stderr.split('\n').pop() ?? '' };
        try {
          const record = await until(
            'the resumed download to finish',
            async () => (await control(dl.socket, 'transfers', {})).find((t) => t.id && t.name === file.name),
            300_000,
            200,
          );
          run.ok = record.size === file.sizeBytes;
          run.intact = run.ok && (await sha256File(record.path)) === file.sha256;
          run.resumedSeconds = record.seconds;
          run.fetchedAfterRestart = record.peers.reduce((a, p) => a + p.chunks, 0);
          // The restarted daemon resumes on its own; a `p2p get` that comes after it finished is told the
          // file is already there (resumedChunks 0, alreadyPresent), so the daemon's log says what it took over.
          const followed = again.result && !present ? again.result.resumedChunks : undefined;
          run.resumedChunks = followed ?? resumedFromLog(dl.proc.logPath);
          if (run.resumedChunks !== undefined && run.verifiedAtKill !== undefined) run.fetchedTwice = run.verifiedAtKill - run.resumedChunks;
          run.seederChunksBeyondOne = (await totalSent()) / CHUNK - sentBefore / CHUNK - chunks;
        } catch (err) {
          run.error = (err as Error).message;
        }
        await lab.stop(dl.proc);
        await lab.removePeerFiles(dl);
        return run;
      };
    },
    // A run that ended before the kill is only in the report.
    describe: (run) =>
      run.getAgain &&
      `killed at ${((run.killedAtFraction ?? 0) * 100).toFixed(0)}% with ${run.verifiedAtKill} chunks verified; resumed ${run.resumedChunks}; fetched twice ${run.fetchedTwice}; intact ${run.intact}; p2p get again: exit ${run.getAgain.code} ${run.getAgain.message}`,
    report(runs) {
      const twice = runs.map((r) => r.fetchedTwice);
      const worst = maxOf(twice);
      const table = mdTable(
        ['strategy', 'run', 'killed at', 'verified at kill', 'resumed (not fetched again)', 'fetched twice', 'fetched after restart', 'seeder chunks beyond one copy', 'resumed part s', 'intact', '`p2p get` again after the restart'],
        runs.map((r) => [
          r.strategy,
          r.run,
          r.killedAtFraction !== undefined ? `${(r.killedAtFraction * 100).toFixed(0)}%` : 'n/a',
          r.verifiedAtKill ?? 'n/a',
          r.resumedChunks ?? 'n/a',
          r.fetchedTwice ?? 'n/a',
          r.fetchedAfterRestart ?? 'n/a',
          r.seederChunksBeyondOne !== undefined ? r.seederChunksBeyondOne.toFixed(1) : 'n/a',
          secs(r.resumedSeconds),
          r.ok ? (r.intact ? 'yes' : '**NO**') : `failed: ${r.error ?? ''}`,
          r.getAgain ? `exit ${r.getAgain.code}: ${r.getAgain.message}` : 'n/a',
        ]),
      );
      const targets = [
        { target: 'every resumed download completes, intact', measured: `${runs.filter((r) => r.intact).length} of ${runs.length}`, holds: runs.length > 0 && runs.every((r) => r.intact) },
        { target: 'at most 2 chunks fetched twice (every run)', measured: `median ${med(twice)}, worst ${worst}`, holds: Number.isFinite(worst) && worst <= 2 },
      ];
      const notes = [
        `"Fetched twice" = chunks verified before the kill (read exactly, the seeders paused) minus the chunks the restarted daemon took over from its journal. "Seeder chunks beyond one copy" counts everything the seeders sent over both halves beyond the file's ${chunks} chunks: chunks fetched twice, chunks cut off in flight by the kill, and endgame duplicates.`,
      ];
      for (const r of runs.filter((x) => x.error)) notes.push(`${r.strategy} run ${r.run}: ${r.error}`);
      const svg = renderChart(`Lab 6: downloading daemon SIGKILLed at ${KILL_AT * 100}% and restarted (${opts.sizeMiB} MiB)`, `${SEEDERS} seeders at 100 Mbit/s; per run`, [
        {
          kind: 'bar',
          title: 'Chunks fetched twice per run',
          yLabel: 'chunks',
          categories: runs.map((r) => `${r.strategy} ${r.run}`),
          groups: [
            { name: 'fetched twice', color: COLORS.adaptive, values: runs.map((r) => r.fetchedTwice) },
            { name: 'sent beyond one copy', color: COLORS.grey, values: runs.map((r) => r.seederChunksBeyondOne) },
          ],
          refLines: [{ y: 2, label: 'target: at most 2' }],
          format: (v) => v.toFixed(0),
        },
      ]);
      return {
        title: 'resume (scenario 6): the downloader killed at 50% and restarted',
        setup: `Four seeder hosts at 100 Mbit/s (tbf), the downloader's link 1 Gbit/s. Per run a fresh downloading p2p-peerd starts \`p2p get\` on a ${opts.sizeMiB} MiB file; at ${KILL_AT * 100}% it is killed with SIGKILL and started again on the same --data; it resumes on its own, and \`p2p get\` is run again as a user would.`,
        params: { sizeMiB: opts.sizeMiB, runs: opts.runs, strategies: opts.strategies, seeders: SEEDERS, killAt: KILL_AT, seederMbit: 100 },
        summary: { medianFetchedTwice: med(twice), worstFetchedTwice: worst },
        targets,
        notes,
        tables: [{ title: 'Run by run', markdown: table }],
        svg,
      };
    },
  };
});
