/**
 * A tracker whose --data holds 100,000 bans and 70,000 reports, driven through the real programs: `p2p
 * admin blacklist ls` and `p2p admin reports` list them all (read in pages: either whole list is more than
 * one frame may carry), adding and removing one ban still works, peer daemons that start get the whole
 * list (one answer, built once per change and shared: issue 12), and one restarted keeps what it had.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Store } from '../../daemon/store.js';
import { ADMIN_TOKEN } from '../helpers/fleet.js';
import { run, start, tempDir, type Result } from '../helpers/programs.js';

const BANS = 100_000;
const REPORTS = 70_000;
const hex = (n: number, width: number): string => n.toString(16).padStart(width, '0');

t.test('100,000 bans and 70,000 reports: listed whole, still changed one by one, and synced to peers', async (t) => {
  const dir = tempDir(t);
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
  const data = path.join(dir, 'tracker');
  const store = new Store(data);
  store.transaction(() => {
    for (let i = 0; i < BANS; i++) {
      store.putBan({ target: hex(i * 2_654_435_761 % 2 ** 32, 40), reason: `banned in a test, number ${i}`, since: 1_700_000_000_000 + i, addedBy: 'admin@127.0.0.1', stamp: [1, i + 1] });
    }
    for (let i = 0; i < REPORTS; i++) {
      const r = { id: hex(i, 16), reporter: hex(i, 40), fileId: hex(i, 64), reason: `report ${i}`, targets: [hex(i, 40)], evidence: 0, time: 1_700_000_000_000 + i, status: 'banned' };
      store.putReport({ ...r, stamp: [1, BANS + i + 1], statusStamp: [1, BANS + i + 1] });
    }
  });
  store.close();

  const tracker = start(t, 'p2p-tracker', ['--listen', '127.0.0.1:0', '--data', data, '--admin-token-file', tokenFile]);
  const address = String((await tracker.logged('tracker listening')).listen);
  const admin = (...args: string[]): Promise<Result> => run('p2p', ['admin', '--tracker', address, '--token-file', tokenFile, ...args], {}, 60_000);
  const json = <T>(r: Result): T => {
    if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };

  const listed = json<Array<{ target: string; reason: string; since: string }>>(await admin('blacklist', 'ls', '--json'));
  t.equal(listed.length, BANS, 'blacklist ls --json lists every ban');
  t.equal(new Set(listed.map((e) => e.target)).size, BANS, 'each once');
  t.match(listed[0], { target: hex(0, 40), reason: 'banned in a test, number 0', since: new Date(1_700_000_000_000).toISOString() }, 'oldest first, as before');
  t.equal(listed.at(-1)?.reason, `banned in a test, number ${BANS - 1}`, 'newest last');

  const reports = json<Array<{ reason: string; time: string }>>(await admin('reports', '--json'));
  t.equal(reports.length, REPORTS, 'reports --json lists every report');
  t.same([reports[0]?.reason, reports.at(-1)?.reason], ['report 0', `report ${REPORTS - 1}`], 'oldest first');

  const newcomer = 'e'.repeat(40);
  t.equal((await admin('blacklist', 'add', newcomer, '--reason', 'one more')).code, 0, 'adding a ban exits 0');
  t.equal((await admin('blacklist', 'add', newcomer, '--reason', 'one more')).code, 0, 'adding it again exits 0 too');
  t.equal(json<unknown[]>(await admin('blacklist', 'ls', '--json')).length, BANS + 1, 'and it is listed, once');
  t.equal((await admin('blacklist', 'rm', newcomer)).code, 0, 'removing it exits 0');
  t.equal((await admin('blacklist', 'rm', newcomer)).code, 3, 'removing it again exits 3 (not found)');

  // A peer daemon starts: it takes the whole list in its first session.
  const peerArgs = (name: string): string[] => {
    const share = path.join(dir, name, 'share');
    fs.mkdirSync(share, { recursive: true });
    return ['--trackers', address, '--share', share, '--data', path.join(dir, name, 'data'), '--listen', '127.0.0.1:0'];
  };
  const p1 = start(t, 'p2p-peerd', peerArgs('p1'));
  t.match(await p1.logged('blacklist re-synced: changes missed while away'), { added: BANS, removed: 0 }, `the first peer holds all ${BANS} bans`);
  // A ban after the list was built for the first peer: a peer starting now gets the new list.
  t.equal((await admin('blacklist', 'add', newcomer, '--reason', 'after the first peer')).code, 0, 'another ban');
  t.match(await p1.logged('blacklist change pushed by the tracker'), { added: 1, removed: 0 }, 'the first peer gets it as a push');
  const p2 = start(t, 'p2p-peerd', peerArgs('p2'));
  t.match(await p2.logged('blacklist re-synced: changes missed while away'), { added: BANS + 1, removed: 0 }, 'a peer starting after it holds that one too');
  // The first peer kept the pushed ban with the rest: restarted, it has them all at once.
  p1.child.kill('SIGTERM');
  await new Promise((resolve) => p1.child.once('exit', resolve));
  const again = start(t, 'p2p-peerd', peerArgs('p1'));
  t.match(await again.logged('blacklist as last known, in force until the tracker is asked'), { entries: BANS + 1 }, 'restarted, the first peer starts with every ban, the pushed one included');
});
