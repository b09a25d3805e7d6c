/**
 * npm run demo: a main and a backup tracker and five peer daemons on loopback in a temporary folder.
 * Shares a generated file on four peers, downloads it on the fifth from all of them with a progress bar,
 * prints what each peer sent and the checksum, then cleans everything up.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { ControlClient } from '../peerd/index.js';
import { canConnect, freePort, generateFile, PROGRAMS, until, Workspace } from './harness.js';

const FILE_MIB = Number(process.env.DEMO_MIB ?? 256);
const SEEDERS = 4;
/** How long each wait of the demo may take, and how often it looks. */
const WAIT_MS = 15_000;
const POLL_MS = 100;

async function call<T>(sock: string, fn: (c: ControlClient) => Promise<T>): Promise<T> {
  const c = await ControlClient.connect(sock);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

async function main(ws: Workspace): Promise<void> {
  const work = ws.dir;
  const [p1, p2] = [await freePort(), await freePort()];
  const cluster = `127.0.0.1:${p1},127.0.0.1:${p2}`;
  console.log(`p2pshare demo in ${work}`);
  console.log(`trackers: main 127.0.0.1:${p1}, backup 127.0.0.1:${p2}`);
  ws.start('tracker-main', PROGRAMS.tracker, ['--listen', `127.0.0.1:${p1}`, '--cluster', cluster, '--data', path.join(work, 't1')]);
  ws.start('tracker-backup', PROGRAMS.tracker, ['--listen', `127.0.0.1:${p2}`, '--cluster', cluster, '--data', path.join(work, 't2')]);
  await until('the trackers to listen', async () => (await canConnect(p1)) && (await canConnect(p2)), WAIT_MS, POLL_MS);

  const names = [...Array.from({ length: SEEDERS }, (_, i) => `seeder${i + 1}`), 'downloader'];
  const socks = new Map<string, string>();
  for (const n of names) {
    const dir = path.join(work, n);
    fs.mkdirSync(path.join(dir, 'share'), { recursive: true });
    ws.start(n, PROGRAMS.peerd, ['--trackers', cluster, '--share', path.join(dir, 'share'), '--data', path.join(dir, 'data'), '--listen', '127.0.0.1:0', '--log-level', 'warn']);
    socks.set(n, path.join(dir, 'data', 'peerd.sock'));
  }
  for (const n of names) await until(`${n} to start`, () => call(socks.get(n)!, (c) => c.call('status', {})), WAIT_MS, POLL_MS);
  console.log(`peer daemons: ${names.join(', ')}`);

  // One generated file, copied to every seeder's share folder (noticed without a restart).
  const file = path.join(work, 'dataset.bin');
  await generateFile(file, FILE_MIB);
  // Copied under a dot name (the daemons skip those) and renamed into place: a daemon never sees it half-written.
  for (const n of names.slice(0, SEEDERS)) {
    const share = path.join(work, n, 'share');
    fs.copyFileSync(file, path.join(share, '.dataset.bin.copying'));
    fs.renameSync(path.join(share, '.dataset.bin.copying'), path.join(share, 'dataset.bin'));
  }
  const hit = await until('the seeders to register', async () => {
    const r = await call(socks.get('downloader')!, (c) => c.call('search', { text: 'dataset' }));
    const named = r.filter((h) => h.name === 'dataset.bin');
    return named.length === 1 && named[0]!.peers >= SEEDERS ? named[0] : undefined;
  }, WAIT_MS, POLL_MS);
  console.log(`shared dataset.bin (${FILE_MIB} MiB) on ${hit.peers} peers; id ${hit.id}`);

  const bar = new cliProgress.SingleBar(
    { format: ' downloading {bar} {percentage}% | {value}/{total} MiB | {rate} MiB/s | {peers} peers', hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  const out = path.join(work, 'downloader', 'share', 'dataset.bin');
  const result = await call(socks.get('downloader')!, (c) =>
    c.call('get', { key: 'dataset.bin', overwrite: false }, (ev) => {
      const mib = (n: unknown): number => Math.round(Number(n) / 1048576);
      const payload = { rate: (Number(ev.rateBytesPerSec) / 1048576).toFixed(0), peers: ev.peers };
      if (ev.type === 'started') bar.start(mib(ev.total), mib(ev.bytes), payload);
      else bar.update(mib(ev.bytes), payload);
    }),
  );
  bar.update(FILE_MIB);
  bar.stop();

  console.log(`\ndownloaded ${FILE_MIB} MiB in ${result.seconds.toFixed(2)} s (${(FILE_MIB / result.seconds).toFixed(0)} MiB/s) to ${out}`);
  console.log('what each peer sent:');
  for (const p of result.peers) {
    console.log(`  ${p.id.slice(0, 16)}  ${p.address.padEnd(22)} ${String(p.chunks).padStart(4)} chunks  ${(p.bytes / 1048576).toFixed(0).padStart(4)} MiB  ${((100 * p.bytes) / result.size).toFixed(1)}%`);
  }
  const sum = (p: string): string => createHash('sha256').update(fs.readFileSync(p)).digest('hex');
  const [a, b] = [sum(file), sum(out)];
  console.log(`sha256 original   ${a}`);
  console.log(`sha256 downloaded ${b}`);
  if (a !== b) throw new Error('checksums differ');
  const after = await until('the downloader to share the file', async () => {
    const r = await call(socks.get('seeder1')!, (c) => c.call('search', { text: 'dataset.bin' }));
    const h = r.find((x) => x.name === 'dataset.bin');
    return h && h.peers > SEEDERS ? h : undefined;
  }, WAIT_MS, POLL_MS);
  console.log(`intact; the downloader now shares it too (${after.peers} holders)`);
}

// The workspace stops every process and removes the folder (also on Ctrl-C); DEMO_KEEP=1 keeps the folder.
const ws = await Workspace.create('p2pshare-demo', Boolean(process.env.DEMO_KEEP));
try {
  await main(ws);
} catch (err) {
  console.error(`demo failed: ${(err as Error).message}${process.env.DEMO_KEEP ? ` (logs in ${ws.dir})` : ''}`);
  process.exitCode = 1;
} finally {
  await ws.cleanup();
}
