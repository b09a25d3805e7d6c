/**
 * One holder of a file as a download sees it: dialled, its identity proven, its round-trip time measured,
 * then its requests in flight and what it has delivered.
 */
import type { Logger } from 'pino';
import { dial, formatAddress, P2PError, type Connection, type DialOptions, type TlsIdentity } from '../protocol/index.js';
import { clientHandshake, peerTls, plainClientHandshake } from './handshake.js';

/** A holder as the tracker lists it. */
export interface Holder {
  peerId: string;
  publicKey: Buffer;
  host: string;
  port: number;
  complete: boolean;
}

export interface Source {
  peerId: string;
  publicKey: Buffer;
  address: string;
  conn: Connection;
  rttMs: number;
  /** Requests in flight, by chunk, with what cancels each. */
  inFlight: Map<number, AbortController>;
  /** Requests to keep in flight. */
  depth: number;
  bytes: number;
  chunks: number;
  failures: number;
  alive: boolean;
  startedAt: number;
  /** Holds the whole file; otherwise its have-bitmap is asked for and refreshed while we run. */
  complete: boolean;
  chunkMs: number[];
  /** When it last delivered a chunk (0: never). */
  deliveredAt: number;
  /** When its oldest request in flight was sent while it had none (0: never asked). */
  busySince: number;
  haveAskedAt: number;
  /** Far behind the others (mean + 3 standard deviations): kept at one request in flight. */
  deweighted: boolean;
  /** The link runs in plain TCP (both peers set --plain-chunk-links), not TLS. */
  plain: boolean;
  /** Its receipts whose signatures were checked (or are being checked) in this download: see Download.verdict. */
  receiptsChecked: number;
}

export interface ConnectDeps {
  identity: TlsIdentity;
  logger: Logger;
  advertisePort: () => number;
  now: () => number;
  /** The download ended: a holder still being measured is hung up on. */
  signal: AbortSignal;
  /**
   * --plain-chunk-links: try the holder without TLS first (it proves nothing at the start, but signs every
   * chunk's receipt); one that takes only TLS is dialled again with it.
   */
  plainLinks?: boolean;
  /**
   * Return the source once the handshake is done, with the handshake's round trip as its round-trip time,
   * and refine it with a PING in the background: a far holder starts taking requests a round trip sooner.
   * Without it the PING is awaited, for a rule that ranks holders by round trip before using any.
   */
  probeLater?: boolean;
}

/** Dials a holder, proves who it is, and measures it; undefined (logged) when it cannot be used. */
export async function connectSource(h: Holder, deps: ConnectDeps): Promise<Source | undefined> {
  const address = formatAddress(h.host, h.port);
  let conn: Connection | undefined;
  const hangUp = (): void => conn?.destroy();
  deps.signal.addEventListener('abort', hangUp);
  try {
    const options: DialOptions = { connectTimeoutMs: 2000, requestTimeoutMs: 30_000, readTimeoutMs: 60_000, maxBodyBytes: 64 * 1024 * 1024, logger: deps.logger, signal: deps.signal };
    let t0 = 0;
    let plain = false;
    if (deps.plainLinks) {
      conn = await dial({ host: h.host, port: h.port }, options);
      deps.signal.throwIfAborted();
      t0 = deps.now();
      try {
        await plainClientHandshake(conn, deps.advertisePort(), deps.identity.keys, h.publicKey, 3000);
        plain = true;
      } catch (err) {
        if (!(err instanceof P2PError && (err.code === 'P2P_TLS_REQUIRED' || err.code === 'P2P_CONNECTION_CLOSED'))) throw err;
        deps.logger.debug({ peer: address }, 'holder takes chunk links only in TLS');
        conn.destroy();
        conn = undefined;
      }
    }
    if (!conn) {
      // TLS proves the key the tracker lists for this holder, and ours to it.
      conn = await dial({ host: h.host, port: h.port }, { ...options, tls: peerTls(deps.identity, h.publicKey, `peer ${address}`) });
      deps.signal.throwIfAborted();
      t0 = deps.now();
      await clientHandshake(conn, deps.advertisePort(), 3000);
    }
    // Round-trip time: the handshake is one round trip (its blacklist check included), then one ping;
    // the smaller estimate wins.
    const t1 = deps.now();
    const ping = conn.request('PING', {}, 'PONG', { timeoutMs: 2000 }).then(() => deps.now() - t1);
    let rttMs = t1 - t0;
    if (!deps.probeLater) rttMs = Math.min(await ping, rttMs);
    const link = conn;
    const source: Source = {
      peerId: h.peerId,
      publicKey: h.publicKey,
      address,
      conn: link,
      rttMs,
      inFlight: new Map(),
      depth: 4,
      bytes: 0,
      chunks: 0,
      failures: 0,
      alive: true,
      startedAt: deps.now(),
      complete: h.complete,
      chunkMs: [],
      deliveredAt: 0,
      busySince: 0,
      haveAskedAt: 0,
      deweighted: false,
      plain,
      receiptsChecked: 0,
    };
    if (deps.probeLater) {
      void ping.then(
        (ms) => {
          source.rttMs = Math.min(source.rttMs, ms);
        },
        // A holder that proved itself but does not answer a PING within 2 s is as unusable as before:
        // closing the link hands its chunks to the others (the download sees the close).
        () => link.destroy(),
      );
    }
    return source;
  } catch (err) {
    if (!deps.signal.aborted) deps.logger.info({ peer: address, err: (err as Error).message }, 'holder unusable for this download');
    conn?.destroy();
    return undefined;
  } finally {
    deps.signal.removeEventListener('abort', hangUp);
  }
}

/** Counts a delivered chunk and sizes the requests in flight to the peer's rate times its round-trip time. */
export function recordDelivery(s: Source, bytes: number, chunkMs: number, chunkSize: number, now: number): void {
  s.bytes += bytes;
  s.chunks++;
  s.deliveredAt = now;
  s.chunkMs.push(chunkMs);
  if (s.chunkMs.length > 32) s.chunkMs.shift();
  if (s.deweighted) return;
  const elapsedSec = (now - s.startedAt) / 1000;
  if (elapsedSec <= 0 || s.chunks < 2) return;
  const bytesPerSec = s.bytes / elapsedSec;
  const bdpChunks = (bytesPerSec * Math.max(s.rttMs, 1)) / 1000 / chunkSize;
  s.depth = Math.max(2, Math.min(16, Math.ceil(bdpChunks) + 3));
}

/**
 * Which of `sources` gets the next request: of those below their depth, the one with the smallest share
 * of its depth in flight, and of equals the one with the fewest in flight. When chunk buffers are short,
 * each source gets buffers in proportion to its depth: sources alike share them evenly, and a far one,
 * whose round trip raised its depth, gets the larger share it needs to keep its link busy.
 */
export function nextToFill<S extends Pick<Source, 'inFlight' | 'depth'>>(sources: Iterable<S>): S | undefined {
  let next: S | undefined;
  for (const s of sources) {
    if (!(s.inFlight.size < s.depth)) continue; // full (or a depth that is not a number)
    if (!next) {
      next = s;
      continue;
    }
    const share = s.inFlight.size * next.depth;
    const nextShare = next.inFlight.size * s.depth;
    if (share < nextShare || (share === nextShare && s.inFlight.size < next.inFlight.size)) next = s;
  }
  return next;
}
