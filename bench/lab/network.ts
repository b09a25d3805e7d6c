/**
 * The lab's network: one Linux bridge and one network namespace per host, each with a veth pair into the
 * bridge. A host's upload is capped with tbf on its own interface (the egress of the host = its uplink);
 * its download with tbf on the bridge's end of the pair (the bridge's egress towards the host).
 * Everything it makes is named with the `p2plab` prefix and removed by `teardown()`, which is synchronous
 * so that it can also run from a process 'exit' handler.
 */
import { execFileSync } from 'node:child_process';

export const BRIDGE = 'p2plab0';
export const NS_PREFIX = 'p2plab-';
/** Host-side veth names: interface names are limited to 15 characters. */
const VETH_PREFIX = 'p2pl-';
const SUBNET = '10.77.0';

export interface LinkCaps {
  /** The host's upload in bits per second; undefined = not capped. */
  upBps?: number | undefined;
  /** The host's download in bits per second; undefined = not capped. */
  downBps?: number | undefined;
}

export interface Host {
  name: string;
  ns: string;
  ip: string;
  caps: LinkCaps;
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(e.stderr ?? e.message).trim()}`);
  }
}

function tryRun(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
  } catch {
    // already gone
  }
}

/**
 * tbf needs a bucket at least one timer tick of traffic deep; 64 KiB covers 100 Mbit/s, and a fast link
 * gets about 2 ms worth (1 Gbit/s: 250 KB). `latency` bounds the queue, as a real switch port would.
 */
function tbfArgs(bps: number): string[] {
  const burstBytes = Math.max(64 * 1024, Math.round(bps / 8 / 500));
  return ['tbf', 'rate', `${Math.round(bps / 1000)}kbit`, 'burst', String(burstBytes), 'latency', '50ms'];
}

export function labNamespaces(): string[] {
  let out = '';
  try {
    out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  } catch {
    return [];
  }
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(NS_PREFIX));
}

export function bridgeExists(): boolean {
  try {
    execFileSync('ip', ['link', 'show', BRIDGE], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The processes still running inside a namespace (`ip netns pids`). */
export function namespacePids(ns: string): number[] {
  try {
    return execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' })
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((n) => Number.isInteger(n) && n > 0);
  } catch {
    return [];
  }
}

export class LabNetwork {
  readonly hosts = new Map<string, Host>();
  private nextIp = 2;
  private built = false;

  /** Creates the bridge. Fails if a lab is already there (another run, or one killed without cleanup). */
  create(): void {
    if (bridgeExists() || labNamespaces().length > 0) {
      throw new Error(`a lab network already exists (bridge ${BRIDGE} or namespaces ${NS_PREFIX}*): another lab is running, or one was killed hard; remove it with: npm run lab -- --cleanup`);
    }
    this.built = true;
    run('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
    run('ip', ['link', 'set', BRIDGE, 'up']);
  }

  /** Adds a host: a namespace with loopback up and eth0 in the bridge at 10.77.0.X/24, links capped as asked. */
  addHost(name: string, caps: LinkCaps = {}): Host {
    if (!this.built) throw new Error('create() the lab network first');
    if (this.hosts.has(name)) throw new Error(`host ${name} exists`);
    if (this.nextIp > 254) throw new Error('the lab subnet is full');
    const ns = `${NS_PREFIX}${name}`;
    const veth = `${VETH_PREFIX}${name}`;
    if (veth.length > 15) throw new Error(`host name ${name} is too long for an interface name`);
    const ip = `${SUBNET}.${this.nextIp++}`;
    run('ip', ['netns', 'add', ns]);
    const host: Host = { name, ns, ip, caps };
    this.hosts.set(name, host);
    run('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    run('ip', ['link', 'set', veth, 'master', BRIDGE, 'up']);
    run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    run('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    if (caps.upBps) run('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', 'eth0', 'root', ...tbfArgs(caps.upBps)]);
    if (caps.downBps) run('tc', ['qdisc', 'add', 'dev', veth, 'root', ...tbfArgs(caps.downBps)]);
    return host;
  }

  host(name: string): Host {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no lab host ${name}`);
    return h;
  }

  /** `ip netns exec NS` prefix for spawning a program inside a host. */
  execPrefix(name: string): string[] {
    return ['netns', 'exec', this.host(name).ns];
  }

  /** Bytes the host's uplink qdisc sent and dropped, from `tc -s` (a check that the cap is what limits). */
  uplinkStats(name: string): { sentBytes: number; dropped: number } {
    const out = run('ip', ['netns', 'exec', this.host(name).ns, 'tc', '-s', 'qdisc', 'show', 'dev', 'eth0']);
    const m = /Sent (\d+) bytes \d+ pkt \(dropped (\d+)/.exec(out);
    return { sentBytes: m ? Number(m[1]) : 0, dropped: m ? Number(m[2]) : 0 };
  }

  /** Removes every namespace and the bridge. Processes must be stopped first (a namespace lives while one runs). */
  teardown(): void {
    for (const h of this.hosts.values()) {
      tryRun('ip', ['netns', 'del', h.ns]);
      tryRun('ip', ['link', 'del', `${VETH_PREFIX}${h.name}`]);
    }
    this.hosts.clear();
    if (this.built) tryRun('ip', ['link', 'del', BRIDGE]);
    this.built = false;
  }
}

/**
 * `npm run lab -- --cleanup`: removes what a lab killed without a chance to clean up left behind (its
 * namespaces, the processes still inside them, which that lab started, and the bridge). Returns what it did.
 */
export function cleanupStale(): string[] {
  const done: string[] = [];
  for (const ns of labNamespaces()) {
    for (const pid of namespacePids(ns)) {
      try {
        process.kill(pid, 'SIGKILL');
        done.push(`killed pid ${pid} (in ${ns})`);
      } catch {
        // gone
      }
    }
    tryRun('ip', ['netns', 'del', ns]);
    done.push(`removed namespace ${ns}`);
  }
  if (bridgeExists()) {
    tryRun('ip', ['link', 'del', BRIDGE]);
    done.push(`removed bridge ${BRIDGE}`);
  }
  return done;
}
