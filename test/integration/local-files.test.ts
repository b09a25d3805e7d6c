/**
 * Issue 10, a local user's attacks on the daemons' files, on real daemons and real folders: a `.part`
 * symlink planted in a shared --out folder, and a --data folder left open to other users.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { partialPathFor } from '../../peerd/partial-file.js';
import { Fleet } from '../helpers/fleet.js';
import { jsonLog, LEVEL } from '../helpers/logs.js';

const modeOf = (dir: string): number => fs.statSync(dir).mode & 0o777;

/** A folder with exactly `mode` (mkdir alone is cut by the umask). */
function looseFolder(dir: string, mode: number): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(dir, mode);
}

t.test('a .part symlink planted in a shared --out folder: the download is refused loudly and the file it points to is untouched', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const seeder = await fleet.startPeer('seeder');
  const downloader = await fleet.startPeer('downloader');
  const orig = path.join(seeder.shareDir, 'film.bin');
  Fleet.randomFile(orig, 3);
  await seeder.call('share', { paths: [orig] });
  await Fleet.held(downloader, 'film.bin', 1);
  const [hit] = await downloader.call('search', { text: 'film.bin' });

  // The downloader's user owns `victim`; another user, who may write in the shared folder, plants the
  // partial file's name there as a symlink to it.
  const victim = path.join(fleet.dir, 'downloader', 'notes.txt');
  const notes = Buffer.from('my own notes, not a film\n');
  fs.writeFileSync(victim, notes);
  const before = fs.statSync(victim);
  const shared = path.join(fleet.dir, 'shared-out');
  looseFolder(shared, 0o1777);
  const target = path.join(shared, 'film.bin');
  const planted = partialPathFor(target, hit!.id);
  fs.symlinkSync(victim, planted);

  await t.rejects(
    downloader.call('get', { key: 'film.bin', out: shared, overwrite: false }),
    { code: 'P2P_UNSAFE_FILE', message: /is a symbolic link; nothing was written through it/ },
    'the download is refused, and says why',
  );
  t.ok(fs.readFileSync(victim).equals(notes), 'the file the symlink points to keeps its bytes');
  t.equal(fs.statSync(victim).size, before.size, 'and its size');
  t.equal(fs.statSync(victim).mtimeMs, before.mtimeMs, 'and was not written at all');
  t.ok(fs.lstatSync(planted).isSymbolicLink(), 'the planted link is left where it was');
  t.notOk(fs.existsSync(target), 'nothing was put in place');

  // What the message tells the user to do works.
  fs.unlinkSync(planted);
  await downloader.call('get', { key: 'film.bin', out: shared, overwrite: false });
  t.ok(fs.readFileSync(target).equals(fs.readFileSync(orig)), 'with the link removed, the download arrives intact');
  t.ok(fs.readFileSync(victim).equals(notes), 'the victim is still untouched');
});

t.test('an existing --data folder open to others is tightened to 0700 at start, with a warning (peer daemon)', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const loose = path.join(fleet.dir, 'loose', 'data');
  looseFolder(loose, 0o755);
  const { logger, lines } = jsonLog();
  await fleet.startPeer('loose', { logger });
  t.equal(modeOf(loose), 0o700, '0755 became 0700');
  const warning = lines.find((l) => l.level === LEVEL.warn && /tightened it to 0700/.test(String(l.msg)));
  t.match(warning, { dataDir: loose, mode: '0755', now: '0700' }, 'one JSON warning says which folder and what its mode was');

  const tidy = path.join(fleet.dir, 'tidy', 'data');
  looseFolder(tidy, 0o700);
  const quiet = jsonLog();
  await fleet.startPeer('tidy', { logger: quiet.logger });
  t.equal(modeOf(tidy), 0o700);
  t.notOk(quiet.lines.some((l) => /tightened/.test(String(l.msg))), 'a private folder is left alone, without a warning');
  const fresh = await fleet.startPeer('fresh');
  t.equal(modeOf(fresh.dataDir), 0o700, 'a new folder is made 0700');
});

t.test('an existing --data folder open to others is tightened to 0700 at start, with a warning (tracker)', async (t) => {
  const fleet = new Fleet(t);
  const dataDir = path.join(fleet.dir, 'tracker');
  looseFolder(dataDir, 0o775);
  const { logger, lines } = jsonLog();
  await fleet.startTracker({ logger });
  t.equal(modeOf(dataDir), 0o700, '0775 became 0700');
  const warning = lines.find((l) => l.level === LEVEL.warn && /tightened it to 0700/.test(String(l.msg)));
  t.match(warning, { dataDir, mode: '0775', now: '0700' }, 'one JSON warning says which folder and what its mode was');
});

t.test('a daemon given a relative --share folder shares a finished download without reading the file again', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const seeder = await fleet.startPeer('seeder');
  const orig = path.join(seeder.shareDir, 'album.bin');
  Fleet.randomFile(orig, 3);
  await seeder.call('share', { paths: [orig] });
  const log = jsonLog();
  const shareDir = path.join(fleet.dir, 'relative-share');
  const downloader = await fleet.startPeer('downloader', { shareDir: path.relative(process.cwd(), shareDir), logger: log.logger });
  await Fleet.held(downloader, 'album.bin', 1);

  const result = await downloader.call('get', { key: 'album.bin', overwrite: false });
  t.equal(result.path, path.join(shareDir, 'album.bin'), 'the download lands in the share folder, named by its absolute path');
  // A scan of the folder after the download (as the watcher's or the periodic one would run).
  await downloader.daemon.library.rescan();
  const files = await downloader.call('files', {});
  t.same(files.map((f) => [f.name, f.path]), [['album.bin', path.join(shareDir, 'album.bin')]], 'it is shared once, under its absolute path');
  t.same(log.lines.filter((l) => l.msg === 'hashed file'), [], 'and its verified chunks were not hashed a second time');
});
