/**
 * How much CPU the lab's own processes use, apart from anything else on the machine: the lab moves itself
 * into a cpuacct cgroup of its own (cgroup v1 `cpuacct`, or a cgroup v2 group where that is what is
 * mounted), so every process it starts is counted there. Machine busy time minus this is other people's
 * work, which on a 2-core machine can distort a measurement; the lab reports it with every run.
 *
 * Inside that group, child groups tell apart whose CPU it was: `product` (tracker, peer daemons, the `p2p`
 * CLI), `aria2c` and `nginx` (the peers scenario's comparator). A process is put in its group before it
 * runs (see `inGroup`), so a group counts all its processes from their first instruction, forked workers
 * included, and keeps counting those that have exited; the lab runner itself (sampling progress, waiting)
 * and the delay proxies stay in the parent group. Both hierarchies count a child group's time in its
 * parent too, so `labCpuSeconds` is still everything.
 * Without a usable cgroup hierarchy it simply reports nothing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { clockTicksPerSecond } from '../harness.js';

export interface CpuUsage {
  seconds: number;
  userSeconds: number;
  systemSeconds: number;
}

export const CPU_GROUPS = ['product', 'aria2c', 'nginx'] as const;
export type CpuGroupName = (typeof CPU_GROUPS)[number];

interface Hierarchy {
  root: string;
  read: (dir: string) => CpuUsage;
}

const HIERARCHIES: Hierarchy[] = [
  {
    // cgroup v1: cpuacct.usage in ns (exact); the user/system split in cpuacct.stat, in clock ticks.
    root: '/sys/fs/cgroup/cpuacct',
    read: (dir) => {
      const seconds = Number(fs.readFileSync(path.join(dir, 'cpuacct.usage'), 'utf8')) / 1e9;
      const stat = fs.readFileSync(path.join(dir, 'cpuacct.stat'), 'utf8');
      const tick = clockTicksPerSecond();
      return { seconds, userSeconds: Number(/^user (\d+)/m.exec(stat)?.[1] ?? NaN) / tick, systemSeconds: Number(/^system (\d+)/m.exec(stat)?.[1] ?? NaN) / tick };
    },
  },
  {
    root: '/sys/fs/cgroup/unified',
    read: (dir) => {
      const stat = fs.readFileSync(path.join(dir, 'cpu.stat'), 'utf8');
      const field = (name: string): number => {
        const m = new RegExp(`^${name} (\\d+)`, 'm').exec(stat);
        if (!m) throw new Error(`no ${name} in ${dir}/cpu.stat`);
        return Number(m[1]) / 1e6;
      };
      return { seconds: field('usage_usec'), userSeconds: field('user_usec'), systemSeconds: field('system_usec') };
    },
  },
];

interface Group {
  dir: string;
  parentProcs: string;
  read: (dir: string) => CpuUsage;
  children: Map<CpuGroupName, string>;
}

let group: Group | undefined;

function tryCreate(h: Hierarchy): Group | undefined {
  if (!fs.existsSync(h.root)) return undefined;
  const dir = path.join(h.root, `p2plab-${process.pid}`);
  try {
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(process.pid));
    h.read(dir);
    return { dir, parentProcs: path.join(h.root, 'cgroup.procs'), read: h.read, children: new Map() };
  } catch {
    try {
      fs.rmdirSync(dir);
    } catch {
      // never made
    }
    return undefined;
  }
}

/** Moves this process (and so everything it starts from now on) into a cgroup of its own. */
export function startCpuAccount(): boolean {
  for (const h of HIERARCHIES) group ??= tryCreate(h);
  return group !== undefined;
}

/** CPU seconds used so far by the lab and every process it started (undefined without a cgroup). */
export function labCpuSeconds(): number | undefined {
  try {
    return group ? group.read(group.dir).seconds : undefined;
  } catch {
    return undefined;
  }
}

function childDir(name: CpuGroupName): string | undefined {
  if (!group) return undefined;
  let dir = group.children.get(name);
  if (!dir) {
    dir = path.join(group.dir, name);
    fs.mkdirSync(dir, { recursive: true });
    group.children.set(name, dir);
  }
  return dir;
}

/** CPU used so far by the processes started in one child group (undefined without a cgroup). */
export function groupCpu(name: CpuGroupName): CpuUsage | undefined {
  try {
    const dir = childDir(name);
    return dir && group ? group.read(dir) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The command line that runs `command args` in a child group: a shell that moves itself there and then
 * execs the command, so the pid stays the same (it is still stopped by pid) and not one instruction of
 * the command runs outside the group. Unchanged without a cgroup.
 */
export function inGroup(name: CpuGroupName, command: string, args: string[]): { command: string; args: string[] } {
  const dir = childDir(name);
  if (!dir) return { command, args };
  return { command: '/bin/sh', args: ['-c', 'echo $$ > "$0" && exec "$@"', path.join(dir, 'cgroup.procs'), command, ...args] };
}

/** Moves this process back and removes the cgroups (synchronous: also runs from an 'exit' handler). */
export function stopCpuAccount(): void {
  if (!group) return;
  try {
    fs.writeFileSync(group.parentProcs, String(process.pid));
    for (const dir of group.children.values()) fs.rmdirSync(dir);
    fs.rmdirSync(group.dir);
  } catch {
    // children still in it (killed hard): --cleanup removes it later
  }
  group = undefined;
}

/** `--cleanup`: cgroups of lab runs that are gone (child groups first: a cgroup with children cannot go). */
export function cleanupStaleCgroups(): string[] {
  const done: string[] = [];
  for (const { root } of HIERARCHIES) {
    let entries: string[] = [];
    try {
      entries = fs.readdirSync(root).filter((e) => /^p2plab-\d+$/.test(e));
    } catch {
      continue;
    }
    for (const e of entries) {
      const pid = Number(e.slice('p2plab-'.length));
      let alive = false;
      try {
        // Not a zombie: a lab killed hard may stay one until it is reaped.
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        alive = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
      } catch {
        // gone
      }
      if (alive) continue;
      const dir = path.join(root, e);
      try {
        for (const child of fs.readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory())) fs.rmdirSync(path.join(dir, child.name));
        fs.rmdirSync(dir);
        done.push(`removed cgroup ${dir}`);
      } catch {
        // still has processes
      }
    }
  }
  return done;
}
