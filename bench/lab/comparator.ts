/**
 * The peers scenario's comparator (issue 8): the same file over plain HTTP. One nginx in each seeder's host
 * serves it from a docroot with sendfile; aria2c in the downloader's host fetches it from all of them at
 * once, one connection each, in 1 MiB pieces (the engine's chunk). Lab only, never a dependency of the
 * product: the Debian packages `aria2` and `nginx-light`.
 *
 * Both run through the lab's Workspace (stopped by pid) in CPU groups of their own (`aria2c`, `nginx`),
 * so their CPU is counted as the product's is: by cgroup, every process, from its first instruction.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { GiveUp, memoryBytes, sleep, until, waitQuiet, type Started } from '../harness.js';
import { costMeter, LAB_QUIET, quietWaitMs, type Lab, type WindowCost } from './lab.js';
import { sha256File, type TestFile } from './scenario.js';

export const COMPARATORS = ['aria2c'] as const;
export type Comparator = (typeof COMPARATORS)[number];

export function isComparator(s: string): s is Comparator {
  return (COMPARATORS as readonly string[]).includes(s);
}

/** nginx's port in each seeder's host (the namespace is the lab's own, so a fixed port cannot clash). */
export const NGINX_PORT = 8080;

export interface ComparatorPrograms {
  aria2c: string;
  nginx: string;
}

function which(name: string): string | undefined {
  // nginx lives in /usr/sbin, which a non-login PATH may lack.
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'].filter((d) => d !== '');
  for (const dir of dirs) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Where aria2c and nginx are, or which of them is missing. */
export function findComparatorPrograms(): { programs: ComparatorPrograms } | { missing: string[] } {
  const aria2c = which('aria2c');
  const nginx = which('nginx');
  if (aria2c && nginx) return { programs: { aria2c, nginx } };
  return { missing: [...(aria2c ? [] : ['aria2c (Debian package aria2)']), ...(nginx ? [] : ['nginx (Debian package nginx-light)'])] };
}

/**
 * One nginx in the foreground, a single process (`master_process off`: nothing forks, so the pid the lab
 * holds is the whole server, and stopping it by pid cannot leave a worker behind), every file it writes
 * in its own folder. `sendfile` sends the file from the page cache to the socket without a copy, the
 * best case for a plain file server.
 */
/**
 * The comparators a scenario can run: those asked for, when aria2c and nginx are both installed (else it
 * says so once, and the scenario runs without them).
 */
export function availableComparators(scenario: string, asked: readonly Comparator[], log: (msg: string) => void): { comparators: Comparator[]; programs?: ComparatorPrograms } {
  if (asked.length === 0) return { comparators: [] };
  const found = findComparatorPrograms();
  if ('missing' in found) {
    log(`${scenario}: ${found.missing.join(' and ')} not found: no aria2c comparator row in this run`);
    return { comparators: [] };
  }
  return { comparators: [...asked], programs: found.programs };
}

export function nginxConfig(o: { ip: string; port: number; docroot: string; dir: string }): string {
  const d = (name: string): string => path.join(o.dir, name);
  return `# written by the p2pshare lab (bench/lab/comparator.ts) for one run; removed with its working folder
daemon off;
master_process off;
worker_processes 1;
# The lab runs as root; the docroot is in its private working folder.
user root;
pid ${d('nginx.pid')};
error_log ${d('error.log')} warn;
events {
  worker_connections 256;
}
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  default_type application/octet-stream;
  client_body_temp_path ${d('tmp-body')};
  proxy_temp_path ${d('tmp-proxy')};
  fastcgi_temp_path ${d('tmp-fastcgi')};
  uwsgi_temp_path ${d('tmp-uwsgi')};
  scgi_temp_path ${d('tmp-scgi')};
  server {
    listen ${o.ip}:${o.port};
    root ${o.docroot};
  }
}
`;
}

/**
 * aria2c fetching one file from `uris`, all at once: `--split` = the number of URIs and one connection per
 * server, so every source gets one connection (with fewer splits than URIs aria2c keeps the rest as
 * spares). It cuts the file at 1 MiB boundaries (`--piece-length`) and hands a connection that finishes
 * its range half of the largest range left as long as that is at least 2 x `--min-split-size`.
 * No config file, no control file saved during the download, no pre-allocation (the engine does none),
 * no progress readout.
 */
export function aria2cArgs(o: { uris: string[]; dir: string; outName: string }): string[] {
  return [
    '--no-conf=true',
    `--split=${o.uris.length}`,
    '--max-connection-per-server=1',
    '--min-split-size=1M',
    '--piece-length=1M',
    '--uri-selector=inorder',
    '--file-allocation=none',
    '--allow-overwrite=true',
    '--auto-file-renaming=false',
    '--auto-save-interval=0',
    '--console-log-level=warn',
    '--summary-interval=0',
    '--show-console-readout=false',
    '--download-result=hide',
    '-d',
    o.dir,
    '-o',
    o.outName,
    ...o.uris,
  ];
}

export function fileUri(ip: string, fileName: string, port = NGINX_PORT): string {
  return `http://${ip}:${port}/${encodeURIComponent(fileName)}`;
}

/** Starts nginx in a seeder's host serving `file`'s folder; returns once it listens. */
export async function startNginx(lab: Lab, programs: ComparatorPrograms, host: string, file: TestFile): Promise<Started> {
  const dir = lab.ws.path('nginx', host);
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const conf = path.join(dir, 'nginx.conf');
  await fsp.writeFile(conf, nginxConfig({ ip: lab.net.host(host).ip, port: NGINX_PORT, docroot: path.dirname(file.path), dir }));
  // -e: the error log before the config is read (the default is compiled in); -p: the prefix for relative paths.
  const proc = lab.run(`nginx-${host}`, host, programs.nginx, ['-e', path.join(dir, 'error.log'), '-p', dir, '-c', conf], { group: 'nginx' });
  // nginx writes its pid file after it has bound its listening socket, and the lab's own namespace has no
  // address on the bridge to try a connection: the pid file is the sign that it listens.
  await until(`nginx in ${host} to listen`, async () => {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new GiveUp(`nginx in ${host} exited: ${lab.ws.tail(proc)} ${readTail(path.join(dir, 'error.log'))}`);
    try {
      const pid = Number(fs.readFileSync(path.join(dir, 'nginx.pid'), 'utf8').trim());
      if (pid !== proc.pid) throw new GiveUp(`nginx in ${host} runs as pid ${pid}, not the ${proc.pid} the lab started: it must stay in the foreground (daemon off, master_process off)`);
      return true;
    } catch (err) {
      if (err instanceof GiveUp) throw err;
      return undefined;
    }
  }, 60_000, 100);
  return proc;
}

function readTail(p: string): string {
  try {
    return fs.readFileSync(p, 'utf8').trimEnd().split('\n').slice(-5).join('\n');
  } catch {
    return '';
  }
}

export interface Aria2cOutcome {
  ok: boolean;
  /** What went wrong, if something did. */
  error?: string;
  /** aria2c's wall time (launch of `ip netns exec ... aria2c` to its exit) plus the `sync -d` of the file after it. */
  seconds: number;
  aria2cSeconds: number;
  syncSeconds: number;
  cost: WindowCost;
  /** aria2c's VmHWM, sampled every 50 ms while it ran (the last sample may miss a late peak). */
  peakRssBytes: number;
  otherBusyBefore: number;
  /** What each seeder host's uplink sent meanwhile, from tc (in URI order): proof that every source was used. */
  sentBytes: number[];
}

/**
 * One timed fetch: waits for a quiet machine, runs aria2c in `host` from every seeder's nginx, then
 * `sync -d` on the file (the engine ends its downloads with a datasync; this makes the two end at the same
 * point), both inside the timing. The file's SHA-256 is checked afterwards, outside it, and the file removed.
 */
export async function fetchWithAria2c(
  lab: Lab,
  programs: ComparatorPrograms,
  host: string,
  seederHosts: string[],
  file: TestFile,
  { timeoutMs = 600_000, port = NGINX_PORT }: { timeoutMs?: number; port?: number } = {},
): Promise<Aria2cOutcome> {
  const dir = lab.ws.path('aria2c', host);
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const out = path.join(dir, file.name);
  const uris = seederHosts.map((h) => fileUri(lab.net.host(h).ip, file.name, port));
  const sentBefore = seederHosts.map((h) => lab.net.uplinkStats(h).sentBytes);
  const otherBusyBefore = await waitQuiet(quietWaitMs(), LAB_QUIET);
  const meter = costMeter();
  const t0 = performance.now();
  const proc = lab.run(`aria2c-${host}.${seederHosts.length}`, host, programs.aria2c, aria2cArgs({ uris, dir, outName: file.name }), { group: 'aria2c' });
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), timeoutMs);
  let peakRssBytes = 0;
  let running = true;
  const sampling = (async () => {
    while (running) {
      try {
        peakRssBytes = Math.max(peakRssBytes, memoryBytes(proc.pid, 'VmHWM'));
      } catch {
        // exited between two samples
      }
      await sleep(50);
    }
  })();
  const { code, signal } = await proc.exited;
  const t1 = performance.now();
  running = false;
  clearTimeout(timer);
  let syncCode: number | null = null;
  if (code === 0) {
    const sync = lab.run(`sync-${host}`, undefined, 'sync', ['-d', out], { group: 'aria2c' });
    syncCode = (await sync.exited).code;
  }
  const t2 = performance.now();
  const seconds = (t2 - t0) / 1000;
  const cost = meter(seconds);
  await sampling;
  const sentAfter = seederHosts.map((h) => lab.net.uplinkStats(h).sentBytes);
  const base = { seconds, aria2cSeconds: (t1 - t0) / 1000, syncSeconds: (t2 - t1) / 1000, cost, peakRssBytes, otherBusyBefore, sentBytes: sentAfter.map((a, i) => a - sentBefore[i]!) };
  let error: string | undefined;
  if (code !== 0) error = `aria2c exited with ${code ?? signal}: ${lab.ws.tail(proc, 5)}`;
  else if (syncCode !== 0) error = `sync -d ${out} exited with ${syncCode}`;
  else {
    const sha256 = await sha256File(out).catch((err: Error) => `unreadable (${err.message})`);
    if (sha256 !== file.sha256) error = `the file aria2c downloaded differs from the source: sha256 ${sha256}, expected ${file.sha256}`;
  }
  await fsp.rm(dir, { recursive: true, force: true });
  return error === undefined ? { ok: true, ...base } : { ok: false, error, ...base };
}
