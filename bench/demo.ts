/**
 * npm run demo: a main and a backup tracker and five peer daemons on loopback in a temporary folder.
 * Shares a generated file on four peers, downloads it on the fifth from all of them with a progress bar,
 * prints what each peer sent and the checksum, then cleans everything up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import { ControlClient } from '../peerd/index.js';

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FILE_MIB = Number(process.env.DEMO_MIB ?? 256);
const SEEDERS = 4;
const children: ChildProcess[] = [];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'p2pshare-demo-'));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function start(program: string, args: string[], name: string): ChildProcess {
  const log = fs.openSync(path.join(work, `${name}.log`), 'a');
  const child = spawn(process.execPath, [path.join(dist, program), ...args], { stdio: ['ignore', 'ignore', log] });
  children.push(child);
  return child;
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch {
      // not ready yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (logs in ${work})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function call<T>(sock: string, fn: (c: ControlClient) => Promise<T>): Promise<T> {
  const c = await ControlClient.connect(sock);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

function cleanup(): void {
  if (process.env.DEMO_KEEP) return;
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  fs.rmSync(work, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const [p1, p2] = [await freePort(), await freePort()];
  const cluster = `127.0.0.1:${p1},127.0.0.1:${p2}`;
  console.log(`p2pshare demo in ${work}`);
  console.log(`trackers: main 127.0.0.1:${p1}, backup 127.0.0.1:${p2}`);
  start('daemon/main.js', ['--listen', `127.0.0.1:${p1}`, '--cluster', cluster, '--data', path.join(work, 't1')], 'tracker-main');
  start('daemon/main.js', ['--listen', `127.0.0.1:${p2}`, '--cluster', cluster, '--data', path.join(work, 't2')], 'tracker-backup');

  const accepts = (port: number): Promise<true | undefined> =>
    new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(undefined));
    });
  await until('the trackers to listen', async () => ((await accepts(p1)) && (await accepts(p2)) ? true : undefined));

  const names = [...Array.from({ length: SEEDERS }, (_, i) => `seeder${i + 1}`), 'downloader'];
  const socks = new Map<string, string>();
  for (const n of names) {
    const dir = path.join(work, n);
    fs.mkdirSync(path.join(dir, 'share'), { recursive: true });
    start('peerd/main.js', ['--trackers', cluster, '--share', path.join(dir, 'share'), '--data', path.join(dir, 'data'), '--listen', '127.0.0.1:0', '--log-level', 'warn'], n);
    socks.set(n, path.join(dir, 'data', 'peerd.sock'));
  }
  for (const n of names) await until(`${n} to start`, () => call(socks.get(n)!, (c) => c.call('status', {})));
  console.log(`peer daemons: ${names.join(', ')}`);

  // One generated file, copied to every seeder's share folder (noticed without a restart).
  const file = path.join(work, 'dataset.bin');
  const block = Buffer.allocUnsafe(1024 * 1024);
  const fd = fs.openSync(file, 'w');
  for (let i = 0; i < FILE_MIB; i++) fs.writeSync(fd, randomFillSync(block));
  fs.closeSync(fd);
  for (const n of names.slice(0, SEEDERS)) fs.copyFileSync(file, path.join(work, n, 'share', 'dataset.bin'));
  const hits = await until('the seeders to register', async () => {
    const r = await call(socks.get('downloader')!, (c) => c.call('search', { text: 'dataset' }));
    return r.find((h) => h.name === 'dataset.bin' && h.peers >= SEEDERS) ? r : undefined;
  });
  console.log(`shared dataset.bin (${FILE_MIB} MiB) on ${hits[0]!.peers} peers; id ${hits[0]!.id}`);

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
  });
  console.log(`intact; the downloader now shares it too (${after.peers} holders)`);
}

process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});
main().then(
  () => {
    cleanup();
    process.exit(0);
  },
  (err: Error) => {
    console.error(`demo failed: ${err.message}`);
    cleanup();
    process.exit(1);
  },
);
