/**
 * How much CPU the lab's own processes use, apart from anything else on the machine: the lab moves itself
 * into a cpuacct cgroup of its own (cgroup v1 `cpuacct`, or a cgroup v2 group where that is what is
 * mounted), so every process it starts is counted there. Machine busy time minus this is other people's
 * work, which on a 2-core machine can distort a measurement; the lab reports it with every run.
 * Without a usable cgroup hierarchy it simply reports nothing.
 */
import fs from 'node:fs';
import path from 'node:path';

interface Group {
  dir: string;
  parentProcs: string;
  read: () => number;
}

let group: Group | undefined;

function tryCreate(root: string, read: (dir: string) => number): Group | undefined {
  if (!fs.existsSync(root)) return undefined;
  const dir = path.join(root, `p2plab-${process.pid}`);
  try {
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(process.pid));
    read(dir);
    return { dir, parentProcs: path.join(root, 'cgroup.procs'), read: () => read(dir) };
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
  group ??=
    tryCreate('/sys/fs/cgroup/cpuacct', (dir) => Number(fs.readFileSync(path.join(dir, 'cpuacct.usage'), 'utf8')) / 1e9) ??
    tryCreate('/sys/fs/cgroup/unified', (dir) => {
      const m = /^usage_usec (\d+)/m.exec(fs.readFileSync(path.join(dir, 'cpu.stat'), 'utf8'));
      if (!m) throw new Error('no usage_usec');
      return Number(m[1]) / 1e6;
    });
  return group !== undefined;
}

/** CPU seconds used so far by the lab and every process it started (undefined without a cgroup). */
export function labCpuSeconds(): number | undefined {
  try {
    return group?.read();
  } catch {
    return undefined;
  }
}

/** Moves this process back and removes the cgroup (synchronous: also runs from an 'exit' handler). */
export function stopCpuAccount(): void {
  if (!group) return;
  try {
    fs.writeFileSync(group.parentProcs, String(process.pid));
    fs.rmdirSync(group.dir);
  } catch {
    // children still in it (killed hard): --cleanup removes it later
  }
  group = undefined;
}

/** `--cleanup`: cgroups of lab runs that are gone. */
export function cleanupStaleCgroups(): string[] {
  const done: string[] = [];
  for (const root of ['/sys/fs/cgroup/cpuacct', '/sys/fs/cgroup/unified']) {
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
      try {
        fs.rmdirSync(path.join(root, e));
        done.push(`removed cgroup ${path.join(root, e)}`);
      } catch {
        // still has processes
      }
    }
  }
  return done;
}
