#!/usr/bin/env node
/**
 * The baseline: what loopback and this disk can do for one file with plain Node and no protocol. A sender
 * reads the file with `filehandle.read` into a few reused 1 MiB buffers and writes them to one TCP
 * connection, respecting backpressure; a receiver, in another process (as a downloading peer is), writes
 * what arrives to a file and syncs it as a download does: a datasync whenever 16 MiB were written since
 * the last one began (one at a time, while writing goes on), so that the disk writes back during the
 * transfer, and one at the end. The time runs from the connection to the end of the last sync, like a
 * download's `seconds`. (Until 2026-12-06 it synced only at the end, and so did a download.)
 *
 *   node dist/bench/baseline.js receive --out FILE      prints {"port"}, later {"bytes","seconds",...}
 *   node dist/bench/baseline.js send --file FILE --to HOST:PORT
 *
 * `runBaseline()` runs one transfer with both and measures the receiver like the benchmark measures a
 * downloading daemon.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import readline from 'node:readline';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuTimes, machineBusySeconds, memoryBytes, ownCpuSeconds, MIB, PROGRAMS, type Workspace } from './harness.js';

/** The receiver syncs whenever this much was written since its last sync began (as a download does). */
const SYNC_EVERY_BYTES = 16 * MIB;

/** Buffers the sender cycles through: one being read while others wait in the socket. */
const SEND_BUFFERS = 4;

export interface BaselineResult {
  bytes: number;
  /** From the connection to the end of the receiver's last datasync. */
  seconds: number;
  /** From the connection to the last byte handed to the file (syncs as it goes included, not the last one). */
  receiveSeconds: number;
  /** The receiving process: CPU seconds during the transfer (user + system, and the kernel's part), its peak RSS. */
  cpuSeconds: number;
  cpuSystemSeconds: number;
  peakRssBytes: number;
  /** The sending process's CPU seconds, as it measured itself (process.cpuUsage) over the whole send. */
  senderCpuSeconds: number;
  /** CPU seconds other processes on the machine used meanwhile (noise; see machineBusySeconds). */
  otherCpuSeconds: number;
  /** The wall time over which otherCpuSeconds was measured. */
  windowSeconds: number;
}

async function receive(out: string): Promise<void> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  process.stdout.write(`${JSON.stringify({ port: (server.address() as net.AddressInfo).port })}\n`);
  const [socket] = (await once(server, 'connection')) as [net.Socket];
  const t0 = performance.now();
  server.close();
  const file = fs.createWriteStream(out, { highWaterMark: MIB, mode: 0o644 });
  await once(file, 'open');
  // fdatasync flushes the file's pages whichever descriptor asks.
  const fh = await fsp.open(out, 'r+');
  let syncedUpTo = 0;
  let syncing: Promise<void> | undefined;
  const syncAsItGoes = (): void => {
    if (syncing || file.bytesWritten - syncedUpTo < SYNC_EVERY_BYTES) return;
    syncedUpTo = file.bytesWritten;
    syncing = fh.datasync().finally(() => {
      syncing = undefined;
      syncAsItGoes();
    });
  };
  socket.on('data', syncAsItGoes);
  await pipeline(socket, file);
  const bytes = file.bytesWritten;
  const receiveSeconds = (performance.now() - t0) / 1000;
  while (syncing) await syncing;
  await fh.datasync();
  await fh.close();
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(`${JSON.stringify({ bytes, seconds, receiveSeconds })}\n`);
  // Stay alive until told to stop, so the caller can read this process's CPU time and peak RSS.
  process.once('SIGTERM', () => process.exit(0));
  setInterval(() => undefined, 60_000);
}

async function send(file: string, host: string, port: number): Promise<void> {
  const socket = net.connect(port, host);
  await once(socket, 'connect');
  const fh = await fsp.open(file, 'r');
  const free: Buffer[] = Array.from({ length: SEND_BUFFERS }, () => Buffer.allocUnsafe(MIB));
  let bufferFreed: (() => void) | undefined;
  try {
    for (let position = 0; ; ) {
      // A buffer is reused only once the socket is done with it (its write callback ran).
      while (free.length === 0) await new Promise<void>((resolve) => (bufferFreed = resolve));
      const buf = free.pop()!;
      const { bytesRead } = await fh.read(buf, 0, MIB, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      const ok = socket.write(buf.subarray(0, bytesRead), () => {
        free.push(buf);
        bufferFreed?.();
        bufferFreed = undefined;
      });
      if (!ok) await once(socket, 'drain');
    }
    socket.end();
    await once(socket, 'close');
  } finally {
    await fh.close();
  }
  const cpu = process.cpuUsage();
  process.stdout.write(`${JSON.stringify({ cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`);
}

/** One baseline transfer of `file` to `out`, sender and receiver as separate processes. */
export async function runBaseline(ws: Workspace, file: string, out: string, run: number): Promise<BaselineResult> {
  const receiver = ws.start(`baseline-receive-${run}`, PROGRAMS.baseline, ['receive', '--out', out], { pipeStdout: true });
  const lines = readline.createInterface({ input: receiver.child.stdout! })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, number>> => {
    const r = await lines.next();
    if (r.done) throw new Error(`the baseline receiver exited early: ${ws.tail(receiver)}`);
    return JSON.parse(r.value) as Record<string, number>;
  };
  try {
    const { port } = await next();
    const cpuBefore = cpuTimes(receiver.pid);
    const machineBefore = machineBusySeconds();
    const ownBefore = ownCpuSeconds();
    const windowStart = performance.now();
    const sender = ws.start(`baseline-send-${run}`, PROGRAMS.baseline, ['send', '--file', file, '--to', `127.0.0.1:${port}`], { pipeStdout: true });
    let senderReport = '';
    sender.child.stdout!.on('data', (b: Buffer) => (senderReport += b.toString()));
    const done = await next();
    const cpuAfter = cpuTimes(receiver.pid);
    const peakRssBytes = memoryBytes(receiver.pid, 'VmHWM');
    const sent = await sender.exited;
    if (sent.code !== 0) throw new Error(`the baseline sender exited with ${sent.code ?? sent.signal}: ${ws.tail(sender)}`);
    // After the sender was reaped, so its CPU is in ownCpuSeconds (children that exited) exactly once.
    const machine = machineBusySeconds() - machineBefore;
    const windowSeconds = (performance.now() - windowStart) / 1000;
    const own = ownCpuSeconds() - ownBefore;
    const cpu = cpuAfter.user + cpuAfter.system - cpuBefore.user - cpuBefore.system;
    const senderCpuSeconds = (JSON.parse(senderReport) as { cpuSeconds: number }).cpuSeconds;
    return {
      bytes: done.bytes!,
      seconds: done.seconds!,
      receiveSeconds: done.receiveSeconds!,
      cpuSeconds: cpu,
      cpuSystemSeconds: cpuAfter.system - cpuBefore.system,
      peakRssBytes,
      senderCpuSeconds,
      otherCpuSeconds: Math.max(0, machine - cpu - own),
      windowSeconds,
    };
  } finally {
    await ws.stop(receiver);
  }
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { out: { type: 'string' }, file: { type: 'string' }, to: { type: 'string' } },
  });
  const usage = 'usage: baseline.js receive --out FILE | send --file FILE --to HOST:PORT';
  if (positionals[0] === 'receive' && values.out) return receive(values.out);
  const to = /^(.+):(\d+)$/.exec(values.to ?? '');
  if (positionals[0] === 'send' && values.file && to) return send(values.file, to[1]!, Number(to[2]));
  process.stderr.write(`${usage}\n`);
  process.exit(2);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: Error) => {
    process.stderr.write(`baseline: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
