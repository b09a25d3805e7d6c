/**
 * The lab at work: a LabNetwork plus the real programs running in its hosts (`ip netns exec NS node
 * dist/...`), all started through one Workspace so that each is stopped by pid. Peers are set up through
 * their control socket (a filesystem path, so it works across namespaces) with the same client `p2p`
 * uses; the measured downloads run the real `p2p get` inside the downloader's host.
 */
import fs from 'node:fs';
import os from 'node:os';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ControlClient, type CommandName, type ControlCommands, type DownloadResult, type StatusInfo } from '../../peerd/index.js';
import { cpuSeconds, cpuTimes, GiveUp, machineBusySeconds, memoryBytes, PROGRAMS, ROOT, sleep, until, waitQuiet, type Started, type Workspace } from '../harness.js';
import { groupCpu, inGroup, labCpuSeconds, type CpuGroupName, type CpuUsage } from './cpu-account.js';
import { LabNetwork, type LinkCaps } from './network.js';

export const MBIT = 1_000_000;
const TRACKER_PORT = 7070;

/** The programs the lab runs: dist/, or the snapshot of it taken when the lab started (see snapshotDist). */
let programs = { ...PROGRAMS, delayProxy: path.join(ROOT, 'dist', 'bench', 'lab', 'delay-proxy.js') };

/**
 * Copies dist/ to bench/.work/lab-dist-PID/dist and runs every program from there, so that a rebuild by
 * someone else while the lab runs (it takes minutes) cannot mix two engines in one result. Inside the
 * checkout, so that node_modules and package.json ("type": "module") are still found above it.
 * Returns the snapshot's folder, to be removed at exit.
 */
export function snapshotDist(): string {
  const dir = path.join(ROOT, 'bench', '.work', `lab-dist-${process.pid}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
  const d = path.join(dir, 'dist');
  programs = {
    ...PROGRAMS,
    tracker: path.join(d, 'daemon', 'main.js'),
    peerd: path.join(d, 'peerd', 'main.js'),
    cli: path.join(d, 'cli', 'p2p.cjs'),
    delayProxy: path.join(d, 'bench', 'lab', 'delay-proxy.js'),
  };
  return dir;
}

export interface LabPeer {
  name: string;
  host: string;
  ip: string;
  proc: Started;
  socket: string;
  share: string;
  data: string;
}

export interface PeerOptions {
  strategy?: 'adaptive' | 'original';
  /** The port other peers should use (a delay proxy's, in the same host). */
  advertisePort?: number;
  extraArgs?: string[];
  /** Reuse the data folder of an earlier daemon of the same name (resume after a crash). */
  keepData?: boolean;
}

export interface GetOutcome {
  code: number;
  result: DownloadResult | undefined;
  stderr: string;
  wallSeconds: number;
  /** The downloading daemon's CPU seconds and memory over the download (fresh daemon: VmHWM is this run's peak). */
  cpuSeconds: number;
  /** Of which in user mode (JavaScript, hashing) and in the kernel (sockets, the file). */
  cpuUserSeconds: number;
  cpuSystemSeconds: number;
  peakRssBytes: number;
  rssBeforeBytes: number;
  /** How busy the whole machine was meanwhile (1 = every core all the time). */
  machineBusyFraction: number;
  /** The part of that not used by the lab's processes: other work on the machine (needs a cgroup). */
  otherBusyFraction: number | undefined;
  /** How busy the machine was just before, with the lab idle (after waiting for it to calm down). */
  otherBusyBefore: number;
  /** CPU seconds every process of the lab used meanwhile: seeders, downloader, CLI, tracker, proxies. */
  labCpuSeconds: number | undefined;
  /** Of which the product's processes (tracker, every peer daemon, the CLI), without the lab runner and proxies. */
  productCpu: CpuUsage | undefined;
  /** CPU seconds each process that ran throughout used meanwhile, by its name (the CLI is not among them). */
  processCpuSeconds: Record<string, number>;
  samples: ProgressSample[];
  /** performance.now() when the CLI was launched and when it exited. */
  startedAt: number;
  endedAt: number;
}

export interface ProgressSample {
  /** Seconds since the CLI was launched. */
  t: number;
  bytes: number;
  total: number;
  peers: number;
}

/** How long a download waits for the machine to calm down first (`--quiet-wait`). */
/** Flags every p2p-peerd of this lab run gets (--plain-chunk-links for a run with plain chunk links). */
let peerdFlags: string[] = [];
export function setPeerdFlags(flags: string[]): void {
  peerdFlags = flags;
}

let defaultQuietWaitMs = 5_000;
export function setQuietWait(ms: number): void {
  defaultQuietWaitMs = ms;
}
export function quietWaitMs(): number {
  return defaultQuietWaitMs;
}

export interface WindowCost {
  /** How busy the whole machine was (1 = every core all the time). */
  machineBusyFraction: number;
  /** The part of that not used by the lab's processes: other work on the machine (needs a cgroup). */
  otherBusyFraction: number | undefined;
  /** CPU seconds every process of the lab used (needs a cgroup). */
  labCpuSeconds: number | undefined;
  /** CPU each child group used (see cpu-account.ts; undefined without a cgroup). */
  groups: Record<CpuGroupName, CpuUsage | undefined>;
}

/** CPU seconds so far of each process still running, by name (one that has just exited is left out). */
function processCpu(processes: Iterable<Started>): Map<string, number> {
  const out = new Map<string, number>();
  for (const p of processes) {
    try {
      out.set(p.name, cpuSeconds(p.pid));
    } catch {
      // gone
    }
  }
  return out;
}

function groupsNow(): Record<CpuGroupName, CpuUsage | undefined> {
  return { product: groupCpu('product'), aria2c: groupCpu('aria2c'), nginx: groupCpu('nginx') };
}

function usageDelta(a: CpuUsage | undefined, b: CpuUsage | undefined): CpuUsage | undefined {
  return a && b ? { seconds: b.seconds - a.seconds, userSeconds: b.userSeconds - a.userSeconds, systemSeconds: b.systemSeconds - a.systemSeconds } : undefined;
}

/**
 * Starts counting what the machine, the lab and each CPU group spend over a measured download; the
 * returned function stops counting and reports it against the download's wall time.
 */
export function costMeter(): (wallSeconds: number) => WindowCost {
  const busyBefore = machineBusySeconds();
  const labBefore = labCpuSeconds();
  const groupsBefore = groupsNow();
  return (wallSeconds) => {
    const busy = machineBusySeconds() - busyBefore;
    const labAfter = labCpuSeconds();
    const groupsAfter = groupsNow();
    const cores = os.cpus().length;
    const lab = labBefore !== undefined && labAfter !== undefined ? labAfter - labBefore : undefined;
    return {
      machineBusyFraction: busy / (wallSeconds * cores),
      otherBusyFraction: lab !== undefined ? Math.max(0, busy - lab) / (wallSeconds * cores) : undefined,
      labCpuSeconds: lab,
      groups: {
        product: usageDelta(groupsBefore.product, groupsAfter.product),
        aria2c: usageDelta(groupsBefore.aria2c, groupsAfter.aria2c),
        nginx: usageDelta(groupsBefore.nginx, groupsAfter.nginx),
      },
    };
  };
}

/**
 * The lab shares the machine with whatever else runs. Before a measurement it waits (harness waitQuiet)
 * until the machine is mostly idle over half a second: < 15% of its cores busy, as the lab's idle daemons
 * use a little.
 */
export const LAB_QUIET = { share: 0.15, windowMs: 500 };

/**
 * From progress samples: when the first verified bytes arrived, and the rate between 10% and 90% of the
 * file (the steady state, without the start-up and the tail).
 */
export function analyzeSamples(samples: ProgressSample[]): { firstBytesSeconds: number | undefined; steadyBitsPerSec: number | undefined } {
  const first = samples.find((s) => s.bytes > 0);
  const total = samples[0]?.total ?? 0;
  const a = samples.find((s) => s.bytes >= 0.1 * total);
  const b = samples.find((s) => s.bytes >= 0.9 * total);
  const steady = a && b && b.t > a.t ? ((b.bytes - a.bytes) * 8) / (b.t - a.t) : undefined;
  return { firstBytesSeconds: first?.t, steadyBitsPerSec: steady };
}

export async function control<C extends CommandName>(socket: string, command: C, args: ControlCommands[C]['args'], timeoutMs = 30_000): Promise<ControlCommands[C]['result']> {
  const c = await ControlClient.connect(socket);
  try {
    return await c.call(command, args, undefined, timeoutMs);
  } finally {
    c.close();
  }
}

export class Lab {
  trackerAddress = '';
  private seq = 0;

  constructor(
    readonly ws: Workspace,
    readonly net: LabNetwork,
  ) {}

  addHost(name: string, caps: LinkCaps = {}): void {
    this.net.addHost(name, caps);
  }

  /** The product's programs (node SCRIPT ARGS in a host), counted in the `product` CPU group. */
  private spawn(name: string, host: string, script: string, args: string[], pipeStdout = false): Started {
    return this.run(name, host, process.execPath, [script, ...args], { group: 'product', pipeStdout });
  }

  /**
   * Starts `command args` through the Workspace (so it is stopped by its pid), inside a host (`ip netns
   * exec`, which execs: the pid is the program's) or, without a host, in the lab's own namespace; in a
   * CPU group if asked (see cpu-account.ts).
   */
  run(name: string, host: string | undefined, command: string, args: string[], opts: { group?: CpuGroupName; pipeStdout?: boolean } = {}): Started {
    const argv = host === undefined ? [command, ...args] : ['ip', ...this.net.execPrefix(host), command, ...args];
    const inner = opts.group ? inGroup(opts.group, argv[0]!, argv.slice(1)) : { command: argv[0]!, args: argv.slice(1) };
    const [first, ...rest] = inner.args;
    if (first === undefined) throw new Error(`${name}: nothing to run`);
    // Workspace.start runs `command ...commandArgs script ...args`: the first argument takes the script's place.
    return this.ws.start(name, first, rest, { command: inner.command, pipeStdout: opts.pipeStdout ?? false });
  }

  /** The tracker, in its own uncapped host, on a fixed port (the namespace is private to the lab). */
  async startTracker(host = 'trk'): Promise<Started> {
    const h = this.net.host(host);
    this.trackerAddress = `${h.ip}:${TRACKER_PORT}`;
    const proc = this.spawn('tracker', host, programs.tracker, ['--listen', this.trackerAddress, '--data', await this.ws.mkdir('tracker'), '--log-level', 'info']);
    // The lab's own namespace has no address on the bridge, so readiness is read from the tracker's log.
    await until('the tracker to listen', async () => {
      if (proc.child.exitCode !== null) throw new GiveUp(`the tracker exited: ${this.ws.tail(proc)}`);
      return fs.readFileSync(proc.logPath, 'utf8').includes('tracker listening') ? true : undefined;
    }, 60_000, 100);
    return proc;
  }

  async startPeer(name: string, host: string, opts: PeerOptions = {}): Promise<LabPeer> {
    const h = this.net.host(host);
    const dir = this.ws.path('peers', name);
    if (!opts.keepData) await fsp.rm(dir, { recursive: true, force: true });
    const share = await this.ws.mkdir('peers', name, 'share');
    const data = await this.ws.mkdir('peers', name, 'data');
    const socket = path.join(data, 'peerd.sock');
    const args = ['--trackers', this.trackerAddress, '--share', share, '--data', data, '--listen', `${h.ip}:0`, '--log-level', 'info'];
    if (opts.strategy) args.push('--strategy', opts.strategy);
    if (opts.advertisePort) args.push('--advertise', `${h.ip}:${opts.advertisePort}`);
    args.push(...peerdFlags, ...(opts.extraArgs ?? []));
    const proc = this.spawn(`${name}.${++this.seq}`, host, programs.peerd, args);
    const peer: LabPeer = { name, host, ip: h.ip, proc, socket, share, data };
    await this.waitReady(peer);
    return peer;
  }

  /** Until the daemon answers on its socket and is connected to the tracker. */
  async waitReady(peer: LabPeer, timeoutMs = 30_000): Promise<StatusInfo> {
    return until(
      `${peer.name} to connect to the tracker`,
      async () => {
        if (peer.proc.child.exitCode !== null || peer.proc.child.signalCode !== null) throw new GiveUp(`${peer.name} exited: ${this.ws.tail(peer.proc)}`);
        const s = await control(peer.socket, 'status', {}, 2000);
        return s.tracker.state === 'connected' ? s : undefined;
      },
      timeoutMs,
      100,
    );
  }

  async startPeers(count: number, name: (i: number) => string, host: (i: number) => string, opts: PeerOptions = {}): Promise<LabPeer[]> {
    const peers: LabPeer[] = [];
    // A few at a time: 20 node processes starting at once on 2 cores take longer than in batches.
    for (let i = 0; i < count; i += 5) {
      const batch = await Promise.all(Array.from({ length: Math.min(5, count - i) }, (_, k) => this.startPeer(name(i + k), host(i + k), opts)));
      peers.push(...batch);
    }
    return peers;
  }

  async share(peer: LabPeer, file: string): Promise<void> {
    await control(peer.socket, 'share', { paths: [file] }, 120_000);
  }

  async unshare(peer: LabPeer, name: string): Promise<void> {
    try {
      await control(peer.socket, 'unshare', { key: name });
    } catch (err) {
      if (!/not shared/.test((err as Error).message)) throw err;
    }
  }

  /** Until the tracker lists exactly `holders` peers for the file, as seen from `peer`. */
  async waitHolders(peer: LabPeer, fileName: string, holders: number, timeoutMs = 30_000): Promise<void> {
    await until(
      `${holders} holders of ${fileName}`,
      async () => {
        const hits = await control(peer.socket, 'search', { text: fileName });
        const n = hits.filter((h) => h.name === fileName).reduce((a, h) => a + h.peers, 0);
        return n === holders ? true : undefined;
      },
      timeoutMs,
      100,
    );
  }

  /** A delay proxy in `host`: listens on `listenPort` there, forwards to `target`, `delayMs` each way. */
  async startDelayProxy(host: string, listenPort: number, target: string, delayMs: number): Promise<Started> {
    const h = this.net.host(host);
    // Network emulation, not the product: no CPU group, so its CPU is the lab's, not the product's.
    const proc = this.run(`proxy-${host}-${listenPort}`, host, process.execPath, [programs.delayProxy, '--listen', `${h.ip}:${listenPort}`, '--target', target, '--delay-ms', String(delayMs)]);
    await until(`the delay proxy in ${host}`, async () => {
      if (proc.child.exitCode !== null) throw new GiveUp(`the delay proxy exited: ${this.ws.tail(proc)}`);
      return fs.readFileSync(proc.logPath, 'utf8').includes('delay proxy listening') ? true : undefined;
    }, 60_000, 100);
    return proc;
  }

  /**
   * Runs `p2p --socket S get NAME --json --no-progress [--strategy X]` inside the peer's host and
   * measures the daemon around it. While it runs, the daemon's progress is sampled every `sampleMs`
   * through its control socket (0: not at all), and `onSample` may act on it (kill seeders at 40%...).
   */
  async get(
    peer: LabPeer,
    fileName: string,
    opts: { strategy?: 'adaptive' | 'original'; overwrite?: boolean; quietWaitMs?: number; timeoutMs?: number; sampleMs?: number; onSample?: (s: ProgressSample) => Promise<void> | void } = {},
  ): Promise<GetOutcome> {
    const quietBefore = await waitQuiet(opts.quietWaitMs ?? defaultQuietWaitMs, LAB_QUIET);
    const pid = peer.proc.pid;
    const cpuBefore = cpuTimes(pid);
    const rssBeforeBytes = memoryBytes(pid, 'VmRSS');
    const meter = costMeter();
    const before = processCpu(this.ws.processes);
    const args = ['--socket', peer.socket, 'get', fileName, '--json', '--no-progress', opts.overwrite === false ? '--no-overwrite' : '--overwrite'];
    if (opts.strategy) args.push('--strategy', opts.strategy);
    const t0 = performance.now();
    const cli = this.spawn(`get-${peer.name}.${++this.seq}`, peer.host, programs.cli, args, true);
    let stdout = '';
    cli.child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const timer = setTimeout(() => cli.child.kill('SIGKILL'), opts.timeoutMs ?? 600_000);
    let exited = false;
    const done = cli.exited.then((r) => {
      exited = true;
      return r;
    });
    const samples: ProgressSample[] = [];
    const sampling = (async () => {
      let client: ControlClient | undefined;
      try {
        client = await ControlClient.connect(peer.socket);
        while (!exited && (opts.sampleMs ?? 100) > 0) {
          const s = await client.call('status', {}, undefined, 5000);
          const tr = s.transfers.find((x) => x.name === fileName) ?? s.transfers[0];
          if (tr && tr.total > 0) {
            const sample: ProgressSample = { t: (performance.now() - t0) / 1000, bytes: tr.bytes, total: tr.total, peers: tr.peers };
            samples.push(sample);
            await opts.onSample?.(sample);
          }
          await sleep(opts.sampleMs ?? 100);
        }
      } catch {
        // the daemon went away (killed on purpose) or the download ended between two samples
      } finally {
        client?.close();
      }
    })();
    const { code } = await done;
    clearTimeout(timer);
    await sampling;
    const endedAt = performance.now();
    const wallSeconds = (endedAt - t0) / 1000;
    const cost = meter(wallSeconds);
    const after = processCpu(this.ws.processes);
    const processCpuSeconds: Record<string, number> = {};
    for (const [name, seconds] of after) {
      const was = before.get(name);
      if (was !== undefined) processCpuSeconds[name] = seconds - was;
    }
    let cpu = { user: NaN, system: NaN };
    let peak = NaN;
    try {
      const after = cpuTimes(pid);
      cpu = { user: after.user - cpuBefore.user, system: after.system - cpuBefore.system };
      peak = memoryBytes(pid, 'VmHWM');
    } catch {
      // the daemon is gone (killed on purpose)
    }
    let result: DownloadResult | undefined;
    if (code === 0) {
      try {
        result = JSON.parse(stdout) as DownloadResult;
      } catch {
        result = undefined;
      }
    }
    return {
      code: code ?? -1,
      result,
      stderr: code === 0 ? '' : this.ws.tail(cli, 3),
      wallSeconds,
      cpuSeconds: cpu.user + cpu.system,
      cpuUserSeconds: cpu.user,
      cpuSystemSeconds: cpu.system,
      peakRssBytes: peak,
      rssBeforeBytes,
      machineBusyFraction: cost.machineBusyFraction,
      otherBusyFraction: cost.otherBusyFraction,
      otherBusyBefore: quietBefore,
      labCpuSeconds: cost.labCpuSeconds,
      productCpu: cost.groups.product,
      processCpuSeconds,
      samples,
      startedAt: t0,
      endedAt,
    };
  }

  async stop(p: Started): Promise<void> {
    await this.ws.stop(p, 5000);
  }

  /** SIGKILL, by pid, and wait for it to be gone. */
  async kill(p: Started): Promise<void> {
    if (p.child.exitCode !== null || p.child.signalCode !== null) return;
    p.child.kill('SIGKILL');
    await p.exited;
  }

  /** Stops every process and deletes the peers' folders; the network stays for the next scenario's teardown. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.ws.processes].map((p) => this.ws.stop(p, 5000)));
  }

  async removePeerFiles(peer: LabPeer): Promise<void> {
    await fsp.rm(path.dirname(peer.share), { recursive: true, force: true });
  }
}

let activeNetwork: LabNetwork | undefined;

/** Builds a fresh lab network for one scenario and always tears it down after, processes first. */
export async function withLab<T>(ws: Workspace, fn: (lab: Lab) => Promise<T>): Promise<T> {
  const net = new LabNetwork();
  activeNetwork = net;
  net.create();
  const lab = new Lab(ws, net);
  try {
    lab.addHost('trk');
    await lab.startTracker('trk');
    return await fn(lab);
  } finally {
    await lab.stopAll();
    net.teardown();
    activeNetwork = undefined;
  }
}

/**
 * The last line of defence, for a process 'exit' handler (synchronous): SIGKILL whatever the workspace
 * still runs, by pid, then remove the namespaces and the bridge.
 */
export function emergencyTeardown(ws: Workspace): void {
  for (const p of ws.processes) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  activeNetwork?.teardown();
}
