/**
 * Issue 4, "a download in progress while the main is killed": two real tracker processes (a main and its
 * backup, default heartbeat and failover times) and PeerDaemons pointed at both. The main is killed -9
 * (or frozen, then killed) while a multi-peer download is under way; the download needs no tracker, so it
 * must go on from the same peers and arrive intact. Meanwhile `search` must work on the downloader within
 * 3 s of the fault, and once the download is done the new main must list the downloader as a complete
 * holder.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import type { DownloadProgress } from '../../peerd/index.js';
import { Fleet, type TestPeer } from '../helpers/fleet.js';
import { TrackerCluster, type TrackerProcess } from '../helpers/tracker-process.js';
import { until } from '../helpers/wait.js';
import { peerSession } from '../helpers/tls.js';

const MIB = 1024 * 1024;
/** Seeders' upload limit: three of them make the download last about 3 s, long enough to span a takeover. */
const SEEDER_RATE = 2.5 * MIB;
const FILE_MIB = 24;

const sha256 = (file: string): string => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/**
 * kill -9, and a freeze (SIGSTOP) followed by kill -9 once the backup has taken over: a killed main is
 * replaced once it has missed two heartbeats (its kernel refuses the backup's connections), a frozen one
 * after a whole failover period, which gives the download a second with no main at all.
 */
type Fault = 'killed -9' | 'frozen, then killed -9';

async function downloadThrough(t: Test, fault: Fault): Promise<void> {
  const fleet = new Fleet(t);
  const c = await TrackerCluster.create(t, { size: 2 }); // the trackers' default timings
  const [main, backup] = c.trackers as [TrackerProcess, TrackerProcess];
  main.start();
  backup.start();
  const role = async (tr: TrackerProcess): Promise<string> => (await tr.admin.self()).role;
  await until('the first tracker of --cluster as main, the other as its backup', async () =>
    (await role(main)) === 'primary' && (await role(backup)) === 'backup' ? true : undefined,
  );

  const trackers = c.trackers.map((tr) => ({ host: '127.0.0.1', port: tr.port }));
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, FILE_MIB);
  const seeders: TestPeer[] = [];
  for (const name of ['s1', 's2', 's3']) {
    const s = await fleet.startPeer(name, { trackers, maxUploadRate: SEEDER_RATE });
    fs.copyFileSync(orig, path.join(s.shareDir, 'film.bin'));
    await s.call('share', { paths: [path.join(s.shareDir, 'film.bin')] });
    seeders.push(s);
  }
  const d = await fleet.startPeer('d', { trackers });
  await Fleet.held(d, 'film.bin', 3);

  // The download, with every progress event and when it came.
  const events: Array<{ at: number; p: DownloadProgress }> = [];
  let atKillPoint: () => void = () => undefined;
  const killPoint = new Promise<void>((resolve) => (atKillPoint = resolve));
  const out = path.join(fleet.dir, 'got.bin');
  const download = d.call('get', { key: 'film.bin', out, overwrite: false }, (ev) => {
    if (ev.type !== 'progress') return;
    const p = ev as unknown as DownloadProgress;
    events.push({ at: Date.now(), p });
    if (p.bytes >= p.total / 5) atKillPoint(); // a fifth done: the main fails
  });
  download.catch(() => atKillPoint()); // a failed download shows below, not as a hang here
  await killPoint;

  const bytesAtKill = events.at(-1)?.p.bytes ?? 0;
  const peersAtKill = events.at(-1)?.p.peers ?? 0;
  const killedAt = Date.now();
  if (fault === 'killed -9') await main.kill9();
  else main.pause();
  t.ok(bytesAtKill > 0 && bytesAtKill < FILE_MIB * MIB, `the main failed mid-download (${(bytesAtKill / MIB).toFixed(1)} of ${FILE_MIB} MiB done)`);
  t.equal(peersAtKill, 3, 'all three seeders were in use when the main died');

  // While the backup takes over: search on the downloader, and when the backup reports itself main.
  const searched = until('search on the downloader to find film.bin', async () => (await d.call('search', { text: 'film' })).some((h) => h.name === 'film.bin'), 3000 - (Date.now() - killedAt), 50).then(
    () => Date.now() - killedAt,
    () => undefined,
  );
  const tookOver = until('the backup to take over', async () => ((await role(backup)) === 'primary' ? Date.now() : undefined));

  const searchMs = await searched;
  t.ok(searchMs !== undefined && searchMs <= 3000, searchMs === undefined ? 'search on the downloader did not find the file within 3 s of the fault' : `search on the downloader answered ${searchMs} ms after the fault`);
  const takeoverAt = await tookOver;
  t.comment(`takeover ${takeoverAt - killedAt} ms after the main failed`);
  if (fault !== 'killed -9') await main.kill9();

  const r = await download;
  t.equal(sha256(out), sha256(orig), 'the file arrived intact');
  t.same(
    r.peers.map((p) => p.id).sort(),
    seeders.map((s) => s.daemon.peerId).sort(),
    'the download ends with the same three seeders it had before the kill',
  );
  t.ok(r.peers.every((p) => p.bytes > 0), `every seeder sent part of it (${r.peers.map((p) => (p.bytes / MIB).toFixed(1)).join(', ')} MiB)`);
  t.equal(r.peers.reduce((n, p) => n + p.bytes, 0), r.size, "the seeders' parts add up to the file");
  const afterKill = events.filter((e) => e.at > killedAt);
  t.ok(afterKill.length > 0 && afterKill.every((e) => e.p.peers === 3), 'no seeder was dropped after the fault');
  if (fault !== 'killed -9') {
    t.ok(
      events.some((e) => e.at > killedAt && e.at < takeoverAt && e.p.bytes > bytesAtKill),
      'chunks kept arriving while there was no main',
    );
  }

  // Registered with the new main, as a complete holder: asked of the new main itself.
  const conn = await peerSession(backup.port);
  t.teardown(() => conn.close());
  const holder = await until('the downloader listed by the new main as a complete holder', async () => {
    const { peers } = await conn.request('LOOKUP', { id: Buffer.from(r.id, 'hex') }, 'LOOKUP_RESULT');
    const h = peers.find((p) => p.peerId === d.daemon.peerId);
    return h?.complete ? h : undefined;
  }, 5000);
  t.ok(holder.complete, 'the new main lists the downloader as holding the whole file');
  t.equal(await Fleet.held(d, 'film.bin', 4), 4, 'search on the downloader shows four holders');
  const status = await d.call('status', {});
  t.same([status.tracker.address, status.tracker.role], [backup.address, 'primary'], 'the downloader is with the new main');
}

for (const fault of ['killed -9', 'frozen, then killed -9'] as const) {
  t.test(
    `a download under way when the main tracker is ${fault} finishes intact from the same peers${fault === 'killed -9' ? '' : ', chunks arriving while there is no main'}; search and registration move to the new main`,
    (t) => downloadThrough(t, fault),
  );
}
