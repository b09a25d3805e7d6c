/**
 * Waiting, shared by the tests and the benchmarks (bench/harness.ts re-exports it; nothing here imports
 * tap): polling until something holds, sleeping, and ports known before a cluster starts.
 */
import net from 'node:net';

/** Ports for daemons that must know each other's addresses before they start (bound, then freed). */
export async function reservePorts(n: number): Promise<number[]> {
  // Below the ephemeral range (32768-60999 on Linux): a port from listen(0), once released, can be taken
  // as the local port of any outgoing connection of a test running alongside before the tracker binds it.
  const held: net.Server[] = [];
  while (held.length < n) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const server = await new Promise<net.Server | undefined>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(undefined));
      s.listen(port, '127.0.0.1', () => resolve(s));
    });
    if (server) held.push(server);
  }
  const ports = held.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(held.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Thrown by a check to stop waiting at once (a process died), rather than retrying until the deadline. */
export class GiveUp extends Error {}

/**
 * Polls `check` every `everyMs` until it returns a value (not undefined or false), or fails after `ms`.
 * A check that throws is tried again (the thing is not up yet), unless it throws GiveUp.
 */
export async function until<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, ms = 10_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + ms;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      if (err instanceof GiveUp) throw err;
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${lastErr ? ` (last error: ${(lastErr as Error).message})` : ''}`);
    await sleep(everyMs);
  }
}
