/**
 * A TCP delay line for the lab, standing in for netem (not available here): accepts connections, opens
 * one to the target for each, and forwards every byte in both directions `delayMs` after it arrived.
 * Order is kept (one FIFO per direction); backpressure is kept too: a direction stops reading once
 * `maxQueuedBytes` are waiting in its line or the far side's socket buffer is full, and reads again when
 * both have drained. The queue must hold a link's bandwidth x delay (200 Mbit/s x 100 ms = 2.5 MB) or
 * it would cap the rate itself; the default of 32 MiB is far above what the lab needs.
 *
 * Run as a program: node dist/bench/lab/delay-proxy.js --listen HOST:PORT --target HOST:PORT --delay-ms N
 */
import net from 'node:net';
import { fileURLToPath } from 'node:url';

export interface DelayProxyOptions {
  listen: { host: string; port: number };
  target: { host: string; port: number };
  /** Added to each direction, so a round trip grows by twice this. */
  delayMs: number;
  maxQueuedBytes?: number;
}

interface Pending {
  data: Buffer;
  dueAt: number;
}

/** One direction of one connection: from `src` into the line, out to `dst` when due. */
class DelayLine {
  private readonly queue: Pending[] = [];
  private head = 0;
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private waitingForDrain = false;
  private srcEnded = false;

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    delayMs: number,
    private readonly maxQueuedBytes: number,
  ) {
    src.on('data', (data: Buffer) => {
      this.queue.push({ data, dueAt: performance.now() + delayMs });
      this.queuedBytes += data.length;
      if (this.queuedBytes >= this.maxQueuedBytes) src.pause();
      this.schedule();
    });
    src.on('end', () => {
      this.srcEnded = true;
      this.schedule();
    });
    dst.on('drain', () => {
      this.waitingForDrain = false;
      this.flush();
    });
  }

  private schedule(): void {
    if (this.timer || this.waitingForDrain) return;
    if (this.head >= this.queue.length) {
      if (this.srcEnded && !this.dst.writableEnded) this.dst.end();
      return;
    }
    const wait = this.queue[this.head]!.dueAt - performance.now();
    if (wait <= 0) {
      this.flush();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, Math.ceil(wait));
  }

  private flush(): void {
    const now = performance.now();
    while (this.head < this.queue.length && this.queue[this.head]!.dueAt <= now) {
      const { data } = this.queue[this.head++]!;
      this.queuedBytes -= data.length;
      if (this.dst.destroyed) return;
      if (!this.dst.write(data)) {
        this.waitingForDrain = true;
        break;
      }
    }
    // Compact the FIFO now and then instead of shifting on every item.
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    if (!this.waitingForDrain && this.queuedBytes < this.maxQueuedBytes / 2 && this.src.isPaused()) this.src.resume();
    this.schedule();
  }

  close(): void {
    clearTimeout(this.timer);
  }
}

export class DelayProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  connections = 0;

  constructor(private readonly opts: DelayProxyOptions) {
    // Half-open: a side that finished sending still gets the delayed bytes still in the line.
    this.server = net.createServer({ allowHalfOpen: true }, (client) => this.onClient(client));
  }

  listen(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.listen.port, this.opts.listen.host, () => {
        this.server.off('error', reject);
        const a = this.server.address() as net.AddressInfo;
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  private onClient(client: net.Socket): void {
    this.connections++;
    client.setNoDelay(true);
    const upstream = net.connect({ port: this.opts.target.port, host: this.opts.target.host, allowHalfOpen: true });
    upstream.setNoDelay(true);
    this.sockets.add(client).add(upstream);
    // Read from the client only once the upstream is there, so nothing is written to a half-open socket.
    client.pause();
    const max = this.opts.maxQueuedBytes ?? 32 * 1024 * 1024;
    const lines = [new DelayLine(client, upstream, this.opts.delayMs, max), new DelayLine(upstream, client, this.opts.delayMs, max)];
    upstream.once('connect', () => client.resume());
    const close = (): void => {
      for (const l of lines) l.close();
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    // A reset or an error on either side ends both: the lab's peers treat that as the peer going away.
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function parseHostPort(v: string | undefined, flag: string): { host: string; port: number } {
  const m = v ? /^\[?([^\]]+)\]?:(\d+)$/.exec(v) : null;
  if (!m) {
    process.stderr.write(`delay-proxy: ${flag} HOST:PORT is required\n`);
    process.exit(2);
  }
  return { host: m[1]!, port: Number(m[2]) };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const flag = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const delayMs = Number(flag('--delay-ms') ?? 'NaN');
  if (!Number.isFinite(delayMs) || delayMs < 0) {
    process.stderr.write('delay-proxy: --delay-ms N (>= 0) is required\n');
    process.exit(2);
  }
  const proxy = new DelayProxy({ listen: parseHostPort(flag('--listen'), '--listen'), target: parseHostPort(flag('--target'), '--target'), delayMs });
  const at = await proxy.listen();
  process.stderr.write(`${JSON.stringify({ msg: 'delay proxy listening', listen: `${at.host}:${at.port}`, delayMs })}\n`);
  const stop = (): void => void proxy.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) void main();
