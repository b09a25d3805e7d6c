/**
 * Issue 11's reported defects, each through the real programs (a tracker and two peer daemons, driven by
 * `p2p`): names with dots inside, non-ASCII in the bad-name message, one content under several names,
 * rounded rates in `get`'s output, and `get` of a file that is already there.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { run, start, tempDir, type Result } from '../helpers/programs.js';
import { until } from '../helpers/wait.js';

interface Hit {
  name: string;
  id: string;
  size: number;
  peers: number;
}

t.test('issue 11 defects, through p2p-tracker, p2p-peerd and p2p', async (t) => {
  const dir = tempDir(t, 'p2p-issue11-');
  const tracker = start(t, 'p2p-tracker', ['--listen', '127.0.0.1:0', '--data', path.join(dir, 'tracker')]);
  const trackerAddress = String((await tracker.logged('tracker listening')).listen);
  const peer = (name: string): { socket: string; share: string; ready: Promise<unknown> } => {
    const share = path.join(dir, name, 'share');
    fs.mkdirSync(share, { recursive: true });
    const data = path.join(dir, name, 'data');
    return { socket: path.join(data, 'peerd.sock'), share, ready: start(t, 'p2p-peerd', ['--trackers', trackerAddress, '--share', share, '--data', data, '--listen', '127.0.0.1:0']).logged('peer daemon ready') };
  };
  const seeder = peer('seeder');
  const leecher = peer('leecher');
  const content = Buffer.alloc(2 * 1024 * 1024 + 5, 'same bytes, two names ');
  fs.writeFileSync(path.join(seeder.share, 'notes...txt'), 'dots inside a name\n');
  fs.writeFileSync(path.join(seeder.share, 'a..b'), 'a..b\n');
  fs.writeFileSync(path.join(seeder.share, 'first-name.bin'), content);
  fs.writeFileSync(path.join(seeder.share, 'second-name.bin'), content);
  await Promise.all([seeder.ready, leecher.ready]);
  const p2p = (who: { socket: string }, ...args: string[]): Promise<Result> => run('p2p', ['--socket', who.socket, ...args]);
  const search = async (text: string): Promise<Hit[]> => {
    const r = await p2p(leecher, 'search', text, '--json');
    if (r.code !== 0) throw new Error(`search exit ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as Hit[];
  };
  await until('the seeder registered its four files', async () => (await search('')).length === 4, 15_000);

  await t.test("names with '..' inside, such as notes...txt and a..b, are accepted", async (t) => {
    t.same((await search('.')).map((h) => h.name).filter((n) => n.includes('..')).sort(), ['a..b', 'notes...txt'], 'both are listed by search');
    const got = await p2p(leecher, 'get', 'notes...txt', '--no-progress');
    t.equal(got.code, 0, `p2p get notes...txt exits 0 ${got.stderr}`);
    t.equal(fs.readFileSync(path.join(leecher.share, 'notes...txt'), 'utf8'), 'dots inside a name\n', 'and saves it under its name');
    const dotdot = await p2p(leecher, 'get', '..', '--no-progress');
    t.not(dotdot.code, 0, "while '..' itself names no file");
  });

  await t.test('the bad-name message prints non-ASCII characters as they are', async (t) => {
    const bad = path.join(dir, 'Grüße-日本\u0001.txt');
    fs.writeFileSync(bad, 'x');
    const r = await p2p(seeder, 'share', bad);
    t.equal(r.code, 1, 'sharing a file whose name has a control character fails');
    t.match(r.stderr, "file name 'Grüße-日本\\u0001.txt' contains", `and quotes the name as it is, only the control character escaped: ${r.stderr.trim()}`);
    t.notMatch(r.stderr, /\?/, 'no question marks in place of characters');
  });

  await t.test('content shared under several names is found under each name, by search and by get NAME', async (t) => {
    const hits = await search('name.bin');
    t.same(hits.map((h) => h.name), ['first-name.bin', 'second-name.bin'], 'search lists both names');
    t.equal(new Set(hits.map((h) => h.id)).size, 1, 'with the same id');
    t.ok(hits.every((h) => h.peers === 1), 'held by one peer');
    for (const [i, name] of ['first-name.bin', 'second-name.bin'].entries()) {
      // Saved (and so shared) under names the searches below do not match.
      const out = path.join(dir, `copy-${i}`);
      const got = await p2p(leecher, 'get', name, '--out', out, '--no-progress', '--json');
      t.equal(got.code, 0, `p2p get ${name} exits 0 ${got.stderr}`);
      t.ok(fs.readFileSync(out).equals(content), `and the file arrives intact under that name`);
    }
    t.equal((await p2p(seeder, 'unshare', 'first-name.bin')).code, 0, 'unsharing one of the names');
    await until('the unshared name to leave search', async () => (await search('name.bin')).length === 1);
    t.same((await search('name.bin')).map((h) => h.name), ['second-name.bin'], 'leaves the other listed');
  });

  await t.test("get's human output rounds the rate", async (t) => {
    const got = await p2p(leecher, 'get', 'a..b', '--no-progress');
    t.equal(got.code, 0, 'p2p get exits 0');
    const rate = /\(([^)]*\/s)\)/.exec(got.stdout)?.[1];
    t.match(rate, /^\d+(\.\d)? (B|KiB|MiB|GiB|TiB)\/s$/, `a rate rounded to at most one decimal: ${rate}`);
    t.notMatch(got.stdout, /\d\.\d{3,}/, 'no long fractions anywhere');
  });

  await t.test('get of a target that already is this file (same id) exits 0, says so, and downloads nothing', async (t) => {
    const target = path.join(leecher.share, 'notes...txt');
    const before = fs.statSync(target);
    const again = await p2p(leecher, 'get', 'notes...txt', '--no-progress');
    t.equal(again.code, 0, `exit code 0 ${again.stderr}`);
    t.match(again.stdout, /already is this file.*nothing downloaded/, `and says so: ${again.stdout.trim()}`);
    const json = await p2p(leecher, 'get', 'notes...txt', '--no-progress', '--json');
    t.equal(json.code, 0, 'with --json too');
    t.match(JSON.parse(json.stdout), { name: 'notes...txt', path: target, alreadyPresent: true, peers: [] }, 'which says alreadyPresent and lists no peers');
    const after = fs.statSync(target);
    t.same([after.ino, after.mtimeMs], [before.ino, before.mtimeMs], 'the file was not written again');
    const transfers = JSON.parse((await p2p(leecher, 'transfers', '--json')).stdout) as Array<{ name: string }>;
    t.equal(transfers.filter((x) => x.name === 'notes...txt').length, 1, 'and no new transfer was recorded');

    const other = path.join(dir, 'other.txt');
    fs.writeFileSync(other, 'different bytes\n');
    const differs = await p2p(leecher, 'get', 'notes...txt', '--out', other, '--no-progress');
    t.equal(differs.code, 1, 'a different file at the target still fails without --overwrite');
    t.equal(fs.readFileSync(other, 'utf8'), 'different bytes\n', 'and is left alone');
  });
});
