/**
 * The download engine on loopback: rate limits, endgame, swarming, and resuming after an interrupted
 * download (a cancelled `get`, and a daemon that stops mid-download and starts again).
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { ControlClient } from '../../peerd/index.js';
import { partialPathFor } from '../../peerd/downloader.js';
import { Fleet, sameContent } from '../helpers/fleet.js';
import { TcpProxy } from '../helpers/relay.js';
import { until } from '../helpers/wait.js';

const MiB = 1024 * 1024;

async function seed(fleet: Fleet, name: string, file: string, opts = {}) {
  const p = await fleet.startPeer(name, opts);
  fs.copyFileSync(file, path.join(p.shareDir, 'f.bin'));
  await p.call('share', { paths: [path.join(p.shareDir, 'f.bin')] });
  return p;
}

t.test('--max-download-rate holds a download to its rate, and status shows it', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 8, 0);
  await seed(fleet, 's1', orig);
  const d = await fleet.startPeer('d1', { maxDownloadRate: 4 * MiB });
  await Fleet.held(d, 'f.bin', 1);
  const seen: number[] = [];
  const started = performance.now();
  const out = path.join(fleet.dir, 'got.bin');
  const pending = d.call('get', { key: 'f.bin', out, overwrite: false }, (ev) => {
    if (ev.type === 'progress') void d.call('status', {}).then((s) => seen.push(s.rates.downloadBytesPerSec));
  });
  await pending;
  const seconds = (performance.now() - started) / 1000;
  t.ok(sameContent(orig, out), 'intact');
  // 8 MiB at 4 MiB/s with a 2 MiB burst: at least 1.5 s; a behaviour check, not a speed measurement.
  t.ok(seconds >= 1.4, `the limit slowed the download (${seconds.toFixed(2)} s)`);
  const status = await d.call('status', {});
  t.equal(status.limits.maxDownloadRate, 4 * MiB, 'status shows the limit');
  t.ok(seen.some((r) => r > 0), 'status showed a download rate while it ran');
});

t.test('endgame: chunks stuck on a crawling peer are fetched from a fast one', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 6, 0);
  const fast = await seed(fleet, 'fast', orig);
  // 64 KiB/s: each 1 MiB chunk would take 16 s from this peer.
  const slow = await seed(fleet, 'slow', orig, { maxUploadRate: 64 * 1024 });
  const d = await fleet.startPeer('d1');
  await Fleet.held(d, 'f.bin', 2);
  const out = path.join(fleet.dir, 'got.bin');
  const r = await d.call('get', { key: 'f.bin', out, overwrite: false, strategy: 'original' });
  t.ok(sameContent(orig, out), 'intact');
  const fromFast = r.peers.find((p) => p.id === fast.daemon.peerId)!;
  const fromSlow = r.peers.find((p) => p.id === slow.daemon.peerId);
  t.ok(fromFast.chunks >= 5, `the fast peer delivered the chunks the slow one held (${fromFast.chunks} of 6)`);
  t.ok((fromSlow?.chunks ?? 0) <= 1, 'the crawling peer did not hold the download back');
});

t.test('many crawling peers do not hold a download up: a peer that delivers nothing while others do loses its requests to them', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 12, 0);
  const fast = await seed(fleet, 'fast', orig);
  // Nine peers that take requests and then send 16 KiB/s (after their first burst): a chunk from one of
  // them takes a minute, and each keeps several chunks in flight; the endgame's second copies of the last
  // chunks can all go to them too.
  for (let i = 0; i < 9; i++) await seed(fleet, `crawl${i}`, orig, { maxUploadRate: 16 * 1024 });
  const d = await fleet.startPeer('d1');
  await Fleet.held(d, 'f.bin', 10);
  const out = path.join(fleet.dir, 'got.bin');
  const r = await d.call('get', { key: 'f.bin', out, overwrite: false });
  t.ok(sameContent(orig, out), 'intact');
  const fromFast = r.peers.find((p) => p.id === fast.daemon.peerId)?.chunks ?? 0;
  t.ok(fromFast >= 3, `the fast peer delivered what the crawlers held (${fromFast} of 12 chunks)`);
  t.ok(r.seconds < 30, `without waiting for the crawlers' requests to time out (60 s): ${r.seconds} s`);
});

t.test('more holders than chunk buffers for four requests each: every holder is asked from the start', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 32, 0);
  // Eight holders, each reached through a link of 64 KiB/s: the handshakes pass, no chunk arrives within
  // this test, so the requests sent at the start are all there are. The daemon's 24 chunk buffers (a
  // request is sent only with one) cover 4 requests each, a source's first depth, for only 6 of them; 32
  // chunks, so that all 24 requests are for different chunks (no endgame copies).
  const holders: Array<Awaited<ReturnType<typeof seed>>> = [];
  for (let i = 0; i < 8; i++) {
    let port = 0;
    const link = new TcpProxy(() => port);
    await link.listen();
    t.teardown(() => link.close());
    link.throttle(64 * 1024);
    const peer = await seed(fleet, `h${i}`, orig, { advertise: { host: '127.0.0.1', port: link.port } });
    port = Number(peer.daemon.listenAddress.split(':').pop());
    holders.push(peer);
  }
  const d = await fleet.startPeer('d1');
  await Fleet.held(d, 'f.bin', 8);
  const c = await ControlClient.connect(d.daemon.socketPath);
  // --max-peers 8: every holder is measured before the first request, so all eight start together.
  const running = c.call('get', { key: 'f.bin', out: path.join(fleet.dir, 'got.bin'), overwrite: false, maxPeers: 8 }).catch(() => undefined);
  const sent = async (): Promise<number[]> => Promise.all(holders.map(async (h) => (await h.call('status', {})).bytesSent));
  await until('24 chunks asked for', async () => ((await sent()).reduce((a, b) => a + b, 0) >= 24 * MiB ? true : undefined), 10_000, 50);
  const perHolder = (await sent()).map((b) => Math.round(b / MiB));
  t.ok(perHolder.every((n) => n >= 2), `the 24 buffers went to all eight holders (chunks asked of each: ${perHolder.join(', ')})`);
  c.close();
  await running;
});

t.test('swarming: a peer serves the verified chunks of a file it is still downloading', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 16, 0);
  await seed(fleet, 's1', orig, { maxUploadRate: 4 * MiB });
  const d1 = await fleet.startPeer('d1');
  const d2 = await fleet.startPeer('d2');
  await Fleet.held(d1, 'f.bin', 1);
  const first = d1.call('get', { key: 'f.bin', out: path.join(fleet.dir, 'one.bin'), overwrite: false });
  // Once the tracker lists d1 as a (partial) holder and d1 has some chunks, d2 starts.
  await Fleet.held(d2, 'f.bin', 2);
  await until('d1 to hold a few chunks', async () => {
    const s = await d1.call('status', {});
    return s.transfers[0] && s.transfers[0].bytes >= 4 * MiB ? true : undefined;
  });
  const second = await d2.call('get', { key: 'f.bin', out: path.join(fleet.dir, 'two.bin'), overwrite: false });
  await first;
  t.ok(sameContent(orig, path.join(fleet.dir, 'one.bin')) && sameContent(orig, path.join(fleet.dir, 'two.bin')), 'both copies intact');
  const fromD1 = second.peers.find((p) => p.id === d1.daemon.peerId);
  t.ok(fromD1 && fromD1.bytes > 0, `the second downloader got chunks from the first while it was downloading (${fromD1?.chunks ?? 0} chunks)`);
});

t.test('a cancelled download resumes where it stopped, without fetching verified chunks again', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 24, 0);
  await seed(fleet, 's1', orig, { maxUploadRate: 8 * MiB });
  const d = await fleet.startPeer('d1');
  await Fleet.held(d, 'f.bin', 1);
  const out = path.join(fleet.dir, 'got.bin');
  // Cancel the way a user does: the p2p command goes away (Ctrl-C) once half is done.
  const c = await ControlClient.connect(d.daemon.socketPath);
  await new Promise<void>((resolve) => {
    c.call('get', { key: 'f.bin', out, overwrite: false }, (ev) => {
      if (Number(ev.bytes) >= 12 * MiB) {
        c.close();
        resolve();
      }
    }).catch(() => resolve());
  });
  await until('the download to stop', async () => ((await d.call('status', {})).transfers.length === 0 ? true : undefined));
  t.notOk(fs.existsSync(out), 'nothing is saved under the final name before it is complete');
  const r = await d.call('get', { key: 'f.bin', out, overwrite: false });
  t.ok(sameContent(orig, out), 'the resumed download is intact');
  t.ok(r.resumedChunks >= 8, `verified chunks were kept (${r.resumedChunks})`);
  const fetched = r.peers.reduce((n, p) => n + p.chunks, 0);
  t.equal(fetched + r.resumedChunks, 24, 'only the missing chunks were fetched');
});

t.test('a daemon stopped mid-download finishes the download on its own when it starts again', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 16, 0);
  await seed(fleet, 's1', orig, { maxUploadRate: 8 * MiB });
  const d = await fleet.startPeer('d1');
  await Fleet.held(d, 'f.bin', 1);
  const out = path.join(fleet.dir, 'got.bin');
  const running = d.call('get', { key: 'f.bin', out, overwrite: false }).catch((err: Error) => err);
  await until('half the file', async () => {
    const s = await d.call('status', {});
    return s.transfers[0] && s.transfers[0].bytes >= 6 * MiB ? true : undefined;
  });
  await d.stop();
  t.type(await running, Error, 'the interrupted get reports a failure');
  // Restarted slower, so the download it resumes on its own is still running when the user asks again.
  const again = await fleet.startPeer('d1', { maxDownloadRate: 4 * MiB });
  await until('the download to resume on its own', async () => ((await again.call('status', {})).transfers.length === 1 ? true : undefined));
  const followed = await again.call('get', { key: 'f.bin', out, overwrite: false });
  t.equal(followed.path, out, 'running get again follows the resumed download instead of refusing');
  t.ok(sameContent(orig, out), 'intact after the restart');
  const [transfer] = await again.call('transfers', {});
  t.ok(transfer && transfer.peers.reduce((n, p) => n + p.chunks, 0) < 16, 'the restarted daemon fetched only what was missing');
});

t.test('after a crash, chunks written but not yet journaled are recovered by checking them, not fetched again', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 12, 0);
  const s = await seed(fleet, 's1', orig);
  const d = await fleet.startPeer('d1');
  await Fleet.held(d, 'f.bin', 1);
  const [file] = await s.call('files', {});
  const shared = s.daemon.library.byId(file!.id)!;
  // The state a kill -9 leaves: a partial file holding 7 verified chunks (plus one torn chunk) that the
  // journal never recorded, because the process died between two journal batches.
  const out = path.join(fleet.dir, 'got.bin');
  const part = partialPathFor(out, file!.id);
  const bytes = fs.readFileSync(orig);
  const fd = fs.openSync(part, 'w');
  fs.ftruncateSync(fd, bytes.length);
  for (const i of [0, 1, 2, 5, 6, 7, 11]) fs.writeSync(fd, bytes, i * MiB, Math.min(MiB, bytes.length - i * MiB), i * MiB);
  fs.writeSync(fd, bytes, 3 * MiB, 1000, 3 * MiB); // torn: only the start of chunk 3 reached the disk
  fs.closeSync(fd);
  d.daemon.db.startPartial(file!.id, part, out, 'f.bin', shared.encoded);

  const r = await d.call('get', { key: 'f.bin', out, overwrite: false });
  t.ok(sameContent(orig, out), 'intact');
  t.equal(r.resumedChunks, 7, 'the seven whole chunks were recovered from disk');
  t.equal(r.peers.reduce((n, p) => n + p.chunks, 0), 12 - 7, 'only the other five were fetched (the torn one among them)');
});

t.test('flash crowd: downloaders that start together trade chunks instead of all waiting on the seeder', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 16, 0);
  const seeder = await seed(fleet, 's1', orig, { maxUploadRate: 8 * MiB });
  const crowd = [await fleet.startPeer('d1'), await fleet.startPeer('d2'), await fleet.startPeer('d3'), await fleet.startPeer('d4')];
  await Fleet.held(crowd[0]!, 'f.bin', 1);
  const results = await Promise.all(crowd.map((d) => d.call('get', { key: 'f.bin', out: path.join(fleet.dir, `${d.name}.bin`), overwrite: false })));
  for (const d of crowd) t.ok(sameContent(orig, path.join(fleet.dir, `${d.name}.bin`)), `${d.name} intact`);
  const fromPeers = results.map((r) => r.peers.filter((p) => p.id !== seeder.daemon.peerId).reduce((n, p) => n + p.chunks, 0));
  t.ok(fromPeers.filter((n) => n > 0).length >= 2, `downloaders fetched from each other (${fromPeers.join(', ')} chunks)`);
  const sent = seeder.daemon.chunkServer.bytesSent;
  t.ok(sent < 4 * 16 * MiB, `the seeder sent less than four copies (${(sent / MiB).toFixed(0)} MiB)`);
});
