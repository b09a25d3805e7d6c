/**
 * The three programs as a user runs them (built into dist/ by `npm test`'s pretest): flags, usage errors
 * and exit codes, --json output, a dead daemon socket, a real tracker and peer daemons driven by `p2p`,
 * and a clean exit on SIGTERM and SIGINT.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { ADMIN_TOKEN } from '../helpers/fleet.js';
import { until } from '../helpers/wait.js';
import { PROGRAMS, run, start, tempDir, VERSION, type Daemon, type Program, type Result } from '../helpers/programs.js';

const noStack = (stderr: string): boolean => !/^\s+at .+[:(]/m.test(stderr);

t.test('--version and --help exit 0 for every program', async (t) => {
  for (const program of Object.keys(PROGRAMS) as Program[]) {
    const [version, help] = await Promise.all([run(program, ['--version']), run(program, ['--help'])]);
    t.equal(version.code, 0, `${program} --version exits 0`);
    t.equal(version.stdout.trim(), VERSION, `${program} --version prints the package version`);
    t.equal(help.code, 0, `${program} --help exits 0`);
    t.match(help.stdout, program === 'p2p' ? /admin/ : program === 'p2p-tracker' ? /--listen[\s\S]*--data[\s\S]*--report-policy/ : /--trackers[\s\S]*--share[\s\S]*--data/, `${program} --help lists what it takes`);
  }
});

t.test('usage errors exit 2 with a one-line reason on stderr', async (t) => {
  const dir = tempDir(t);
  const cases: Array<[string, Program, string[], RegExp]> = [
    ['an unknown flag', 'p2p-tracker', ['--listen', '127.0.0.1:0', '--data', dir, '--bogus'], /bogus/],
    ['an unknown flag', 'p2p-peerd', ['--trackers', '127.0.0.1:1', '--share', dir, '--data', dir, '--bogus'], /bogus/],
    ['an unknown flag', 'p2p', ['status', '--bogus'], /bogus/],
    ['a missing --data', 'p2p-tracker', ['--listen', '127.0.0.1:0'], /data/],
    ['a missing --trackers', 'p2p-peerd', ['--share', dir, '--data', dir], /trackers/],
    ['a missing --token-file', 'p2p', ['admin', '--tracker', '127.0.0.1:1', 'status'], /token-file/],
    ['no command', 'p2p', [], /command/],
    ['a bad address', 'p2p-tracker', ['--listen', 'nowhere', '--data', dir], /HOST:PORT/],
    ['a bad --max-peers', 'p2p', ['get', 'x', '--max-peers', '0'], /max-peers/],
    ['a --limit of 0', 'p2p', ['search', 'x', '--limit', '0'], /limit/],
    ['a --limit past 10000', 'p2p', ['search', 'x', '--limit', '10001'], /limit/],
    ['a --limit with no value', 'p2p', ['search', 'x', '--limit'], /limit/],
  ];
  const results = await Promise.all(cases.map(([, program, args]) => run(program, args)));
  cases.forEach(([what, program, , reason], i) => {
    const r = results[i]!;
    const first = r.stderr.split('\n')[0]!;
    t.equal(r.code, 2, `${program} with ${what} exits 2`);
    t.match(first, new RegExp(`^${program}: .*${reason.source}`, reason.flags), `and says why on the first stderr line: ${first}`);
    t.ok(noStack(r.stderr), 'without a stack trace');
    t.equal(r.stdout, '', 'and nothing on stdout');
  });
});

t.test('local inputs that cannot be used (a token file, an address, a socket path) fail with exit 1 and a line naming them', async (t) => {
  const dir = tempDir(t);
  const token = path.join(dir, 'token');
  fs.writeFileSync(token, 'a-token\n', { mode: 0o600 });
  const empty = path.join(dir, 'empty-token');
  fs.writeFileSync(empty, '\n', { mode: 0o600 });
  const longSocket = path.join(dir, 's'.repeat(120));
  const cases: Array<[string, Program, string[], RegExp]> = [
    ['an unreadable --token-file', 'p2p', ['admin', '--tracker', '127.0.0.1:1', '--token-file', path.join(dir, 'missing'), 'status'], /cannot read --token-file .*missing: ENOENT/],
    ['an empty --token-file', 'p2p', ['admin', '--tracker', '127.0.0.1:1', '--token-file', empty, 'status'], /--token-file .*empty-token is empty/],
    ['an admin --tracker that is not an address', 'p2p', ['admin', '--tracker', 'nowhere', '--token-file', token, 'status'], /'nowhere' is not HOST:PORT/],
    ['a --socket path too long for a Unix socket', 'p2p-peerd', ['--trackers', '127.0.0.1:1', '--share', path.join(dir, 'share'), '--data', path.join(dir, 'data'), '--socket', longSocket], /cannot start: control socket path is too long .*pass a shorter --socket/],
  ];
  const results = await Promise.all(cases.map(([, program, args]) => run(program, args)));
  cases.forEach(([what, program, , reason], i) => {
    const r = results[i]!;
    t.equal(r.code, 1, `${program} with ${what} exits 1`);
    t.match(r.stderr, new RegExp(`^${program}: .*${reason.source}`, 'm'), `and says why: ${r.stderr.trim().split('\n').at(-1)}`);
    t.ok(noStack(r.stderr), 'without a stack trace');
  });
});

t.test('a missing or dead daemon socket fails fast with exit 1 and says how to start p2p-peerd', async (t) => {
  const dir = tempDir(t);
  const missing = path.join(dir, 'missing.sock');
  const stale = path.join(dir, 'stale.sock');
  fs.writeFileSync(stale, ''); // a leftover that no daemon listens on
  // What is measured is the failing, not node's start-up: each case and a --version run, one at a time,
  // three times each, and the quickest of each (a busy machine slows some runs, never all three). These
  // runs go without the coverage hook, as a user runs p2p; the first run of each case is covered.
  const quickest = async (args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<number> => {
    let best = Infinity;
    for (let i = 0; i < 3; i++) best = Math.min(best, (await run('p2p', [...args], env, undefined, { coverage: false })).ms);
    return best;
  };
  const baseline = await quickest(['--version']);
  const cases = [
    ['--socket', ['--socket', missing, 'status'], {}, missing],
    ['P2P_SOCKET, a stale socket file', ['search', 'x'], { P2P_SOCKET: stale }, stale],
  ] as const;
  for (const [what, args, env, sock] of cases) {
    const r = await run('p2p', [...args], env);
    t.equal(r.code, 1, `${what}: exit code 1`);
    t.match(r.stderr, 'p2p-peerd', `${what}: the message says how to start p2p-peerd`);
    t.match(r.stderr, sock, `${what}: and names the socket it tried`);
    t.equal(r.stderr.trim().split('\n').length, 1, `${what}: in one line`);
    const ms = Math.min(r.ms, await quickest(args, env));
    t.ok(ms - baseline < 1000, `${what}: it fails within a second (${Math.round(ms)} ms, of which ~${Math.round(baseline)} ms is node start-up)`);
  }
});

t.test('search says on stderr when more files match than it lists, and --limit lists fewer', async (t) => {
  const dir = tempDir(t);
  const tracker = start(t, 'p2p-tracker', ['--listen', '127.0.0.1:0', '--data', path.join(dir, 'tracker')]);
  const trackerAddress = String((await tracker.logged('tracker listening')).listen);
  const share = path.join(dir, 'share');
  fs.mkdirSync(share);
  const names = ['plan-c.txt', 'plan-a.txt', 'Plan-b.txt', 'plan-d.txt', 'other.txt'];
  for (const name of names) fs.writeFileSync(path.join(share, name), `contents of ${name}`);
  const socket = path.join(dir, 'data', 'peerd.sock');
  const daemon = start(t, 'p2p-peerd', ['--trackers', trackerAddress, '--share', share, '--data', path.join(dir, 'data'), '--listen', '127.0.0.1:0']);
  await daemon.logged('peer daemon ready');
  const p2p = (...args: string[]): Promise<Result> => run('p2p', ['--socket', socket, ...args]);
  const listed = (r: Result): string[] => (JSON.parse(r.stdout) as Array<{ name: string }>).map((h) => h.name);
  await until('every plan listed', async () => {
    const r = await p2p('search', 'plan', '--json');
    return r.code === 0 && listed(r).length === 4 ? true : undefined;
  });

  const all = await p2p('search', 'plan', '--json');
  t.same(listed(all), ['plan-a.txt', 'Plan-b.txt', 'plan-c.txt', 'plan-d.txt'], 'without --limit every match is listed, by name');
  t.equal(all.stderr, '', 'and nothing is said on stderr');

  const two = await p2p('search', 'plan', '--limit', '2', '--json');
  t.equal(two.code, 0, '--limit 2 exits 0');
  t.equal(listed(two).length, 2, 'and lists two files');
  t.ok(listed(two).every((n) => /^plan-/i.test(n)), 'both of them matches');
  t.match(two.stderr, /^p2p: more files match; these are 2 of them/, 'and says on stderr that more match');

  const table = await p2p('search', 'plan', '--limit', '3');
  t.equal(table.stdout.trim().split('\n').length, 4, 'the table lists three files under its heading');
  t.match(table.stderr, /more files match.*raise --limit \(up to 10000\)/, 'and says how to see the others');
  t.equal((await p2p('search', 'plan', '--limit', '4', '--json')).stderr, '', 'a limit the matches fit in says nothing');
});

t.test('the real programs: --json, exit codes 3 and 4, admin, report, and a clean exit on SIGTERM and SIGINT', async (t) => {
  const dir = tempDir(t);
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
  const wrongToken = path.join(dir, 'wrong');
  fs.writeFileSync(wrongToken, 'not-the-token\n', { mode: 0o600 });

  const tracker = start(t, 'p2p-tracker', ['--listen', '127.0.0.1:0', '--data', path.join(dir, 'tracker'), '--admin-token-file', tokenFile]);
  const trackerAddress = String((await tracker.logged('tracker listening')).listen);
  t.match(trackerAddress, /^127\.0\.0\.1:\d+$/, 'the tracker logs where it listens, as JSON on stderr');

  const peer = (name: string): { daemon: Daemon; socket: string; share: string } => {
    const share = path.join(dir, name, 'share');
    fs.mkdirSync(share, { recursive: true });
    const socket = path.join(dir, name, 'data', 'peerd.sock');
    return { daemon: start(t, 'p2p-peerd', ['--trackers', trackerAddress, '--share', share, '--data', path.join(dir, name, 'data'), '--listen', '127.0.0.1:0']), socket, share };
  };
  const seeder = peer('seeder');
  const leecher = peer('leecher');
  await Promise.all([seeder.daemon.logged('peer daemon ready'), leecher.daemon.logged('peer daemon ready')]);
  const p2p = (who: { socket: string }, ...args: string[]): Promise<Result> => run('p2p', ['--socket', who.socket, ...args]);
  const json = <T>(r: Result): T => {
    if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };

  const content = Buffer.alloc(3 * 1024 * 1024 + 77, 'p2pshare ');
  fs.writeFileSync(path.join(seeder.share, 'report.pdf'), content);
  const hits = await until('report.pdf in search', async () => {
    const h = json<Array<{ name: string; id: string; size: number; peers: number }>>(await p2p(leecher, 'search', 'REPORT', '--json'));
    return h.length === 1 ? h : undefined;
  });
  t.match(hits, [{ name: 'report.pdf', id: /^[0-9a-f]{64}$/, size: content.length, peers: 1 }], 'search --json: [{name, id, size, peers}]');
  t.match((await p2p(leecher, 'search', 'report')).stdout, /report\.pdf/, 'search without --json prints a table');

  const status = json<{ peerId: string; listen: string; tracker: { address: string; role: string }; shared: number; transfers: unknown[] }>(await p2p(seeder, 'status', '--json'));
  t.match(status, { peerId: /^[0-9a-f]{40}$/, listen: /^127\.0\.0\.1:\d+$/, tracker: { address: trackerAddress, role: 'primary' }, shared: 1, transfers: [] }, 'status --json');
  t.match(json(await p2p(seeder, 'files', '--json')), [{ name: 'report.pdf', id: hits[0]!.id, size: content.length, path: path.join(seeder.share, 'report.pdf') }], 'files --json: [{name, id, size, path}]');

  const out = path.join(dir, 'copy.pdf');
  const got = json<{ name: string; id: string; path: string; size: number; seconds: number; peers: Array<{ id: string; address: string; bytes: number; chunks: number }> }>(
    await p2p(leecher, 'get', 'report.pdf', '--out', out, '--no-progress', '--json'),
  );
  t.match(got, { name: 'report.pdf', id: hits[0]!.id, path: out, size: content.length, seconds: Number, peers: [{ id: status.peerId, address: /:\d+$/, bytes: content.length, chunks: 4 }] }, 'get --json: {name, id, path, size, seconds, peers}');
  t.ok(fs.readFileSync(out).equals(content), 'the file arrived intact');
  const taken = path.join(dir, 'taken.pdf');
  fs.writeFileSync(taken, 'another file');
  const again = await p2p(leecher, 'get', 'report.pdf', '--out', taken, '--no-progress');
  t.equal(again.code, 1, 'get onto an existing other file without --overwrite exits 1 (no terminal to ask on)');
  t.equal((await p2p(leecher, 'get', 'report.pdf', '--out', out, '--no-progress')).code, 0, 'get onto the very same file exits 0 (issue 11)');

  const missing = await p2p(leecher, 'get', 'no-such-file.bin', '--no-progress');
  t.equal(missing.code, 3, 'get of a file no one has exits 3');
  t.match(missing.stderr, /no-such-file\.bin/, 'and names it');

  const admin = (token: string, ...args: string[]): Promise<Result> => run('p2p', ['admin', '--tracker', trackerAddress, '--token-file', token, ...args]);
  const wrong = await admin(wrongToken, 'blacklist', 'ls');
  t.equal(wrong.code, 4, 'admin with a wrong token exits 4');
  t.match(wrong.stderr, /token/i, 'and says the token was refused');
  t.match(json(await admin(tokenFile, 'status', '--json')), [{ address: trackerAddress, role: 'primary', term: Number, reachable: true }], 'admin status --json');

  const reported = json<{ blacklisted: string[] }>(await p2p(leecher, 'report', 'report.pdf', '--reason', 'not a report at all', '--json'));
  t.same(reported.blacklisted, [status.peerId], 'p2p report blacklists the peer it came from');
  const refused = await p2p(seeder, 'search', 'report');
  t.equal(refused.code, 4, "the blacklisted peer's search exits 4");
  t.match(refused.stderr, /blacklist/i, 'and says why');
  t.match(json(await admin(tokenFile, 'blacklist', 'ls', '--json')), [{ target: status.peerId, reason: /not a report at all/, since: String }], 'admin blacklist ls --json: [{target, reason, since}]');
  t.match(json(await admin(tokenFile, 'reports', '--json')), [{ reason: 'not a report at all', evidence: 'user' }], 'admin reports --json shows the report');
  t.equal((await admin(tokenFile, 'blacklist', 'rm', status.peerId)).code, 0, 'admin blacklist rm exits 0');
  t.same(json(await admin(tokenFile, 'blacklist', 'ls', '--json')), [], 'and the blacklist is empty again');
  t.equal((await admin(tokenFile, 'blacklist', 'rm', status.peerId)).code, 3, 'removing an entry that is not there exits 3');

  seeder.daemon.child.kill('SIGTERM');
  leecher.daemon.child.kill('SIGINT');
  const [s, l] = await Promise.all([seeder.daemon.exited, leecher.daemon.exited]);
  t.same({ code: s.code, signal: s.signal }, { code: 0, signal: null }, 'p2p-peerd exits 0 on SIGTERM');
  t.same({ code: l.code, signal: l.signal }, { code: 0, signal: null }, 'and on SIGINT');
  t.ok(s.ms < 4000 && l.ms < 4000, `promptly (${Math.round(s.ms)} and ${Math.round(l.ms)} ms), not by the 5 s forced exit`);
  t.notOk(fs.existsSync(seeder.socket), 'its control socket is removed');
  tracker.child.kill('SIGTERM');
  const tr = await tracker.exited;
  t.same({ code: tr.code, signal: tr.signal }, { code: 0, signal: null }, 'p2p-tracker exits 0 on SIGTERM');
  t.ok(tr.ms < 4000, `promptly (${Math.round(tr.ms)} ms)`);
  t.ok(tracker.logs.some((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM'), 'it logged the shutdown');
});
