/**
 * A second yardstick for the loopback benchmark: the file fetched over HTTP from nginx (sendfile, from the
 * page cache) by curl into a file, then synced (`sync -d`), the way an administrator would copy it by hand.
 * Nothing is verified. nginx comes from Debian's `nginx-light` and curl from `curl`, for benchmarks only;
 * when either is missing the comparison is skipped.
 */
import fs from 'node:fs';
import path from 'node:path';
import { nginxConfig } from './lab/comparator.js';
import { canConnect, cpuTimes, freePort, ownCpuSeconds, type Started, type Workspace } from './harness.js';

export const NGINX = '/usr/sbin/nginx';
export const CURL = '/usr/bin/curl';
const SYNC = '/usr/bin/sync';

export interface CurlNginxResult {
  bytes: number;
  /** curl's whole run (process start included) plus the sync of the file. */
  seconds: number;
  /** curl and sync: CPU seconds (user + system). */
  cpuSeconds: number;
  /** nginx's CPU seconds over the same transfer. */
  serverCpuSeconds: number;
}

export function curlNginxAvailable(): boolean {
  return [NGINX, CURL, SYNC].every((p) => fs.existsSync(p));
}

/** One nginx serving the folder of `file` on 127.0.0.1, up until the workspace stops it. */
export async function startNginx(ws: Workspace, docroot: string): Promise<{ proc: Started; port: number }> {
  const port = await freePort();
  const dir = await ws.mkdir('nginx');
  const conf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(conf, nginxConfig({ ip: '127.0.0.1', port, docroot, dir }));
  const proc = ws.start('nginx', '-p', [dir, '-c', conf, '-e', path.join(dir, 'error.log')], { command: NGINX });
  for (let i = 0; ; i++) {
    if (await canConnect(port)) return { proc, port };
    if (proc.child.exitCode !== null || i > 200) throw new Error(`nginx did not start: ${ws.tail(proc)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** curl fetches `name` from nginx into `out`, then `sync -d` flushes it; timed and costed together. */
export async function runCurlNginx(ws: Workspace, nginx: { proc: Started; port: number }, name: string, out: string, run: number): Promise<CurlNginxResult> {
  const ownBefore = ownCpuSeconds();
  const serverBefore = cpuTimes(nginx.proc.pid);
  const t0 = performance.now();
  const curl = ws.start(`curl-${run}`, '-sS', ['--fail', '-o', out, `http://127.0.0.1:${nginx.port}/${encodeURIComponent(name)}`], { command: CURL });
  const c = await curl.exited;
  if (c.code !== 0) throw new Error(`curl exited with ${c.code ?? c.signal}: ${ws.tail(curl)}`);
  const sync = ws.start(`sync-${run}`, '-d', [out], { command: SYNC });
  const s = await sync.exited;
  if (s.code !== 0) throw new Error(`sync exited with ${s.code ?? s.signal}: ${ws.tail(sync)}`);
  const seconds = (performance.now() - t0) / 1000;
  const serverAfter = cpuTimes(nginx.proc.pid);
  return {
    bytes: fs.statSync(out).size,
    seconds,
    // The children were reaped, so their CPU is in ownCpuSeconds; this process only waited meanwhile.
    cpuSeconds: ownCpuSeconds() - ownBefore,
    serverCpuSeconds: serverAfter.user + serverAfter.system - serverBefore.user - serverBefore.system,
  };
}
