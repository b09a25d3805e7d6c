/**
 * One TCP relay on 127.0.0.1 for every test that puts something between two ends: a partition or a slow
 * link between trackers (pass, drop, stall, throttle, one direction at a time by giving each direction its
 * own relay), a sniffer that records every byte it passes, an attacker that relays connections to someone
 * else. Nothing here imports tap (the benchmarks may use it too).
 */
import net from 'node:net';

/** How a proxy treats traffic: pass it, drop it (reset every connection, refuse new ones), or stall it. */
export type ProxyMode = 'pass' | 'drop' | 'stall';

export interface TcpProxyOptions {
  /** Keep a copy of every byte passed, both ways: what a sniffer on the wire sees (`seen()`, `bytes()`). */
  record?: boolean;
}

/**
 * A TCP relay to a port on 127.0.0.1: passes, drops (resets every connection, refuses new ones) or stalls
 * (holds every byte, in order, until set to pass again) the traffic. Passing can be throttled (a slow
 * link). Bytes it still holds when either end closes are lost, as a crashed machine's unsent data is.
 * The target is asked for each new connection (a function may pick another each time, or one known only
 * later); `dialed` lists the port each connection was relayed to.
 */
export class TcpProxy {
  mode: ProxyMode = 'pass';
  port = 0;
  readonly dialed: number[] = [];
  private server: net.Server;
  private readonly recorded: Buffer[] = [];
  private readonly pipes = new Set<{ from: net.Socket; to: net.Socket; held: Buffer[] }>();
  private readonly sockets = new Set<net.Socket>();
  /** Bytes per second that each direction of each connection carries while passing (undefined: no limit). */
  private bytesPerSec: number | undefined;
  private pump: NodeJS.Timeout | undefined;
  private pumpedAt = 0;

  constructor(
    private readonly target: number | (() => number),
    private readonly options: TcpProxyOptions = {},
  ) {
    this.server = net.createServer((client) => this.accept(client));
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Every byte passed so far, both ways, in the order they arrived (with `record`). */
  seen(): Buffer {
    return Buffer.concat(this.recorded);
  }

  bytes(): number {
    return this.recorded.reduce((n, c) => n + c.length, 0);
  }

  /**
   * Listens on a port the kernel picks, never one in `avoid`: the trackers' ports are reserved and freed
   * before they start, so the kernel may hand one of them out again. With `port`, listens on that one.
   */
  async listen(avoid: ReadonlySet<number> = new Set(), port = 0): Promise<void> {
    if (port !== 0) {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(port, '127.0.0.1', () => resolve());
      });
      this.port = port;
      return;
    }
    const refused: net.Server[] = [];
    for (;;) {
      await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
      this.port = (this.server.address() as net.AddressInfo).port;
      if (!avoid.has(this.port)) break;
      refused.push(this.server);
      this.server = net.createServer((client) => this.accept(client));
    }
    await Promise.all(refused.map((s) => new Promise((r) => s.close(r))));
  }

  private accept(client: net.Socket): void {
    if (this.mode === 'drop') return void client.destroy();
    const to = typeof this.target === 'number' ? this.target : this.target();
    this.dialed.push(to);
    const upstream = net.connect(to, '127.0.0.1');
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    this.pipe(client, upstream);
    this.pipe(upstream, client);
  }

  private pipe(from: net.Socket, to: net.Socket): void {
    const p = { from, to, held: [] as Buffer[] };
    this.pipes.add(p);
    from.on('close', () => this.pipes.delete(p));
    from.on('data', (d: Buffer) => {
      if (this.options.record) this.recorded.push(Buffer.from(d));
      if (this.mode === 'pass' && this.bytesPerSec === undefined && p.held.length === 0) return void to.write(d);
      p.held.push(d);
      this.flush();
    });
  }

  set(mode: ProxyMode): void {
    this.mode = mode;
    if (mode === 'drop') for (const s of this.sockets) s.destroy();
    this.flush();
  }

  /** Limits what passes to `bytesPerSec` each way on each connection, or (undefined) lifts the limit. */
  throttle(bytesPerSec: number | undefined): void {
    this.bytesPerSec = bytesPerSec;
    this.flush();
  }

  /** Passes held bytes: all at once, or (throttled) a share every 10 ms. */
  private flush(): void {
    if (this.mode !== 'pass') return;
    if (this.bytesPerSec === undefined) {
      this.stopPump();
      for (const p of this.pipes) for (const d of p.held.splice(0)) p.to.write(d);
      return;
    }
    if (this.pump || ![...this.pipes].some((p) => p.held.length > 0)) return;
    this.pumpedAt = Date.now();
    this.pump = setInterval(() => this.passShare(), 10);
  }

  /** Passes what the time since the last share allows (timers fire late on a loaded machine). */
  private passShare(): void {
    if (this.mode !== 'pass' || this.bytesPerSec === undefined) {
      this.stopPump();
      return this.flush();
    }
    const now = Date.now();
    const elapsedMs = Math.min(100, now - this.pumpedAt);
    this.pumpedAt = now;
    let holding = false;
    for (const p of this.pipes) {
      let budget = Math.max(1, Math.floor((this.bytesPerSec * elapsedMs) / 1000));
      while (budget > 0 && p.held.length > 0) {
        const d = p.held[0]!;
        const n = Math.min(budget, d.length);
        p.to.write(d.subarray(0, n));
        if (n === d.length) p.held.shift();
        else p.held[0] = d.subarray(n);
        budget -= n;
      }
      holding ||= p.held.length > 0;
    }
    if (!holding) this.stopPump();
  }

  private stopPump(): void {
    clearInterval(this.pump);
    this.pump = undefined;
  }

  async close(): Promise<void> {
    this.stopPump();
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}


/** proxies[i][j]: how member i of a cluster reaches member j (none where i = j). */
export type ProxyMesh = Array<Array<TcpProxy | undefined>>;

/** A proxy on every link between the daemons listening on `ports`; none of them listens on one of those ports. */
export async function proxyMesh(ports: number[]): Promise<ProxyMesh> {
  const mesh: ProxyMesh = [];
  for (let i = 0; i < ports.length; i++) {
    mesh[i] = [];
    for (let j = 0; j < ports.length; j++) {
      if (i === j) continue;
      const p = new TcpProxy(ports[j]!);
      await p.listen(new Set(ports));
      mesh[i]![j] = p;
    }
  }
  return mesh;
}

/** Cuts (drop, stall) or heals (pass) every link between member i and each of `others`, both ways. */
export function setLinks(mesh: ProxyMesh, i: number, others: number[], mode: ProxyMode): void {
  for (const j of others) {
    mesh[i]![j]!.set(mode);
    mesh[j]![i]!.set(mode);
  }
}

export async function closeMesh(mesh: ProxyMesh): Promise<void> {
  for (const row of mesh) for (const p of row) await p?.close();
}
