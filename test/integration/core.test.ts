/**
 * The core slice end to end, on real sockets and files: share, search, a multi-peer download that arrives
 * byte-identical and is then shared, and the faults a user would meet: a seeder whose file was damaged
 * after sharing, a seeder that dies mid-download, a tracker restart.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { ControlClient } from '../../peerd/index.js';
import { dial } from '../../protocol/index.js';
import { Fleet, sameContent } from '../helpers/fleet.js';
import { until } from '../helpers/wait.js';


t.test('a file shared on three peers arrives byte-identical on a fourth, from several of them, and is then shared', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const seeders = [await fleet.startPeer('s1'), await fleet.startPeer('s2'), await fleet.startPeer('s3')];
  const d = await fleet.startPeer('d1');
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 24);
  for (const s of seeders) {
    fs.copyFileSync(orig, path.join(s.shareDir, 'data set.bin'));
    await s.call('share', { paths: [path.join(s.shareDir, 'data set.bin')] });
  }
  await Fleet.held(d, 'data set.bin', 3);
  const hits = await d.call('search', { text: 'DATA SET' });
  t.equal(hits.length, 1, 'search is a case-insensitive substring match');
  t.equal(hits[0]!.size, 24 * 1024 * 1024 + 12345);

  const events: string[] = [];
  const out = path.join(fleet.dir, 'got.bin');
  const r = await d.call('get', { key: 'data set.bin', out, overwrite: false }, (ev) => events.push(String(ev.type)));
  t.ok(sameContent(orig, out), 'downloaded bytes equal the original');
  t.ok(r.peers.filter((p) => p.bytes > 0).length >= 2, 'several peers contributed');
  t.equal(r.peers.reduce((n, p) => n + p.bytes, 0), r.size, "the peers' parts add up to the file");
  t.ok(events.includes('started'), 'progress events reach the client');
  t.equal(await Fleet.held(seeders[0]!, 'data set.bin', 4), 4, 'the downloader is listed as a holder afterwards');
  const transfers = await d.call('transfers', {});
  t.equal(transfers[0]!.id, r.id, 'the transfer is in the history');
  t.same(fs.readdirSync(fleet.dir).filter((n) => n.endsWith('.part')), [], 'no partial file is left behind');
});

t.test('search lists files by name, ignoring case and accents, in whatever order the tracker answers', async (t) => {
  const fleet = new Fleet(t);
  const tracker = await fleet.startTracker();
  const s = await fleet.startPeer('s1');
  const d = await fleet.startPeer('d1');
  // Shared one at a time, so the tracker's index holds them in this order, not the names'.
  const names = ['zeta.txt', 'Beta.txt', 'émile.txt', 'alpha.txt', 'beta.txt', 'Emile.txt'];
  for (const [i, name] of names.entries()) {
    fs.writeFileSync(path.join(s.shareDir, name), `file ${i}`);
    await s.call('share', { paths: [path.join(s.shareDir, name)] });
  }
  await until('every file listed', async () => ((await d.call('search', { text: '.txt' })).length === names.length ? true : undefined));
  const byName = ['alpha.txt', 'Beta.txt', 'beta.txt', 'Emile.txt', 'émile.txt', 'zeta.txt'];
  t.notSame(tracker.state.search('.txt', 100).hits.map((h) => h.name), byName, "the tracker's own answer is not in name order");
  t.same((await d.call('search', { text: '.txt' })).map((h) => h.name), byName, 'p2p search lists them by name: case and accents aside, then the exact name');
});

t.test('a seeder whose file was damaged after sharing cannot spoil a download', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const good = await fleet.startPeer('good');
  const bad = await fleet.startPeer('damaged');
  const d = await fleet.startPeer('d1');
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 8);
  await Fleet.seed([good, bad], orig, 'f.bin', d);
  // Damage every chunk on disk, keeping size and mtime, so only reading the data can tell.
  const p = path.join(bad.shareDir, 'f.bin');
  const st = fs.statSync(p);
  const fd = fs.openSync(p, 'r+');
  for (let i = 0; i < 9; i++) fs.writeSync(fd, Buffer.from('garbage'), 0, 7, i * 1024 * 1024 + 100);
  fs.closeSync(fd);
  fs.utimesSync(p, st.atime, st.mtime);

  const out = path.join(fleet.dir, 'got.bin');
  const r = await d.call('get', { key: 'f.bin', out, overwrite: false });
  t.ok(sameContent(orig, out), 'the download is intact');
  const fromBad = r.peers.find((x) => x.id === bad.daemon.peerId);
  t.equal(fromBad?.bytes ?? 0, 0, 'the damaged seeder sent nothing');
  // The damaged seeder noticed and re-hashed its copy: it now shares it under a different id.
  const files = await until('the damaged copy to be re-hashed', async () => {
    const f = await bad.call('files', {});
    return f.length === 1 && f[0]!.id !== r.id ? f : undefined;
  });
  t.not(files[0]!.id, r.id, 'the damaged file is no longer offered as the original');
});

t.test('a seeder that dies mid-download loses its chunks to the others', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const seeders = [await fleet.startPeer('s1'), await fleet.startPeer('s2'), await fleet.startPeer('s3')];
  const d = await fleet.startPeer('d1');
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, 40);
  for (const s of seeders) {
    fs.copyFileSync(orig, path.join(s.shareDir, 'big.bin'));
    await s.call('share', { paths: [path.join(s.shareDir, 'big.bin')] });
  }
  await Fleet.held(d, 'big.bin', 3);
  const victim = seeders[1]!;
  let killed = false;
  const out = path.join(fleet.dir, 'got.bin');
  const r = await d.call('get', { key: 'big.bin', out, overwrite: false }, (ev) => {
    if (!killed && ev.type === 'started') {
      killed = true;
      void victim.stop();
    }
  });
  t.ok(killed, 'a seeder was stopped during the download');
  t.ok(sameContent(orig, out), 'the download completed intact');
  t.ok(r.peers.filter((p) => p.id !== victim.daemon.peerId && p.bytes > 0).length >= 1, 'the survivors carried it');
});

t.test('a restarted tracker is refilled by peers re-registering', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker({ leaseMs: 3000 });
  const s = await fleet.startPeer('s1');
  const d = await fleet.startPeer('d1');
  fs.writeFileSync(path.join(s.shareDir, 'notes.txt'), 'hello, fleet\n');
  await Fleet.held(d, 'notes.txt', 1);
  const port = fleet.trackerAddress.port;
  await fleet.tracker.close();
  await fleet.startTracker({ leaseMs: 3000 }, port);
  t.equal(await Fleet.held(d, 'notes.txt', 1), 1, 'search finds the file again after the restart');
  const out = path.join(fleet.dir, 'notes-copy.txt');
  await d.call('get', { key: 'notes.txt', out, overwrite: false });
  t.equal(fs.readFileSync(out, 'utf8'), 'hello, fleet\n');
});

t.test('get refuses to overwrite unless told, resolves ids, and reports unknown files', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const s = await fleet.startPeer('s1');
  const d = await fleet.startPeer('d1');
  fs.writeFileSync(path.join(s.shareDir, 'a.txt'), 'version one');
  const [shared] = await s.call('share', { paths: [path.join(s.shareDir, 'a.txt')] });
  await Fleet.held(d, 'a.txt', 1);
  const out = path.join(fleet.dir, 'keep.txt');
  fs.writeFileSync(out, 'keep me');
  await t.rejects(d.call('get', { key: 'a.txt', out, overwrite: false }), { code: 'P2P_EXISTS' });
  t.equal(fs.readFileSync(out, 'utf8'), 'keep me', 'the existing file is untouched');
  await d.call('get', { key: shared!.id, out, overwrite: true });
  t.equal(fs.readFileSync(out, 'utf8'), 'version one', 'get by id with overwrite replaces it');
  await t.rejects(d.call('get', { key: 'no-such-file.bin', overwrite: false }), { code: 'P2P_NOT_FOUND' });
  await t.rejects(d.call('share', { paths: [path.join(fleet.dir, 'missing.bin')] }), { code: 'P2P_NOT_FOUND' });

  // One name, two different files: get by name is ambiguous and lists the ids.
  const s2 = await fleet.startPeer('s2');
  fs.writeFileSync(path.join(s2.shareDir, 'a.txt'), 'version two');
  await s2.call('share', { paths: [path.join(s2.shareDir, 'a.txt')] });
  await until('two a.txt files', async () => ((await d.call('search', { text: 'a.txt' })).length === 2 ? true : undefined));
  await t.rejects(d.call('get', { key: 'a.txt', out: path.join(fleet.dir, 'x.txt'), overwrite: false }), { code: 'P2P_AMBIGUOUS', message: new RegExp(shared!.id) }, 'P2P_AMBIGUOUS, listing the ids');

  // Paths that are not what get and share need: P2P_BAD_PATH, naming the path.
  await t.rejects(d.call('get', { key: shared!.id, out: path.join(fleet.dir, 'no-such-folder', 'x.txt'), overwrite: false }), { code: 'P2P_BAD_PATH', message: /no-such-folder does not exist/ });
  fs.mkdirSync(path.join(fleet.dir, 'outdir', 'a.txt'), { recursive: true });
  await t.rejects(d.call('get', { key: shared!.id, out: path.join(fleet.dir, 'outdir'), overwrite: true }), { code: 'P2P_BAD_PATH', message: /a\.txt is a folder/ });
  await t.rejects(d.call('share', { paths: [fleet.dir] }), { code: 'P2P_BAD_PATH', message: /is not a regular file/ });
});

t.test('a control request the daemon cannot run gets a code that says why, and the socket keeps serving', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  // The seeder sends a chunk, then waits 16 s for its next at 64 KiB/s: the download stays under way.
  const s = await fleet.startPeer('s1', { maxUploadRate: 64 * 1024 });
  const d = await fleet.startPeer('d1');
  Fleet.randomFile(path.join(s.shareDir, 'slow.bin'), 3);
  await Fleet.held(d, 'slow.bin', 1);

  const conn = await dial({ path: d.daemon.socketPath }, { connectTimeoutMs: 1000, requestTimeoutMs: 5000 });
  t.teardown(() => conn.destroy());
  await t.rejects(conn.request('CONTROL', { command: 'files', args: 'not json' }, 'CONTROL_RESULT'), { code: 'P2P_MALFORMED', message: /not JSON/ });
  await t.rejects(conn.request('CONTROL', { command: 'files', args: '42' }, 'CONTROL_RESULT'), { code: 'P2P_MALFORMED', message: /JSON object/ });
  await t.rejects(conn.request('CONTROL', { command: 'defragment', args: '{}' }, 'CONTROL_RESULT'), { code: 'P2P_UNEXPECTED_MESSAGE', message: /unknown command 'defragment'.*older than p2p/ });
  t.same(JSON.parse((await conn.request('CONTROL', { command: 'files', args: '{}' }, 'CONTROL_RESULT')).result), [], 'the same connection still runs a good command');

  // A second get of a file already being downloaded, to another path: P2P_IN_PROGRESS, naming the first path.
  const first = await ControlClient.connect(d.daemon.socketPath);
  const firstOut = path.join(fleet.dir, 'first.bin');
  const running = first.call('get', { key: 'slow.bin', out: firstOut, overwrite: false }).catch((err: unknown) => err);
  await until('the first download under way', () => (d.daemon.status().transfers.length === 1 ? true : undefined));
  await t.rejects(d.call('get', { key: 'slow.bin', out: path.join(fleet.dir, 'second.bin'), overwrite: false }), { code: 'P2P_IN_PROGRESS', message: new RegExp(`already being downloaded here, to ${firstOut}`) });
  first.close(); // the p2p command went away: the first download stops
  await running;
  await until('the first download stopped', () => (d.daemon.status().transfers.length === 0 ? true : undefined));
});

t.test('files dropped into the share folder are shared without a restart, and unshare withdraws them', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const s = await fleet.startPeer('s1');
  const d = await fleet.startPeer('d1');
  fs.writeFileSync(path.join(s.shareDir, 'dropped.txt'), 'new file');
  await Fleet.held(d, 'dropped.txt', 1);
  await s.call('unshare', { key: 'dropped.txt' });
  t.same(await d.call('search', { text: 'dropped' }), [], 'unshared file vanished from search');
  t.same(await s.call('files', {}), [], 'and from the files list');
});

t.test('a shared file that changes is announced under its new id, and the old id is withdrawn', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const s = await fleet.startPeer('s1');
  const d = await fleet.startPeer('d1');
  const p = path.join(s.shareDir, 'log.txt');
  fs.writeFileSync(p, 'first version\n');
  await Fleet.held(d, 'log.txt', 1);
  const [before] = await d.call('search', { text: 'log.txt' });
  fs.appendFileSync(p, 'second line, written later\n');
  const after = await until('only the new version listed', async () => {
    const hits = await d.call('search', { text: 'log.txt' });
    return hits.length === 1 && hits[0]!.id !== before!.id ? hits : undefined;
  });
  t.equal(after[0]!.size, fs.statSync(p).size, 'search lists the file as it is now');
});
