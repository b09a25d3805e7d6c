/**
 * What the peer daemon counts for `--metrics`: plain numbers, bumped where each event happens and read
 * by peerd/metrics.ts only when Prometheus scrapes. A chunk sent or received costs two additions here:
 * no allocation, no label string (prom-client's `labels(...).inc()` builds a key string on every call),
 * nothing when nobody scrapes.
 */

/** How a chunk link runs: TLS (the default) or plain TCP (both peers set --plain-chunk-links). */
export const LINKS = ['tls', 'plain'] as const;
export type Link = (typeof LINKS)[number];

export const linkOf = (plain: boolean): Link => (plain ? 'plain' : 'tls');

/** Why a download stopped using a holder: a closed catalogue, so the metric's label stays small. */
export const DROP_REASONS = [
  /** Dialled, but its handshake or first ping failed (never used). */
  'unreachable',
  'connection_closed',
  'blacklisted',
  /** Its manifest did not match the file id, or it could not send one. */
  'bad_manifest',
  /** A chunk's receipt did not match the chunk (no evidence against it). */
  'bad_receipt',
  /** A chunk failed verification against the manifest (reported with its receipt). */
  'bad_data',
  /** Too many failed chunk requests. */
  'request_failures',
  /** The adaptive strategy found it far slower than the others. */
  'slow',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export const VERIFICATION_FAILURES = ['bad_data', 'bad_receipt'] as const;
export type VerificationFailure = (typeof VERIFICATION_FAILURES)[number];

export interface LinkTotals {
  uploadBytes: number;
  uploadChunks: number;
  downloadBytes: number;
  downloadChunks: number;
}

export class PeerCounters {
  readonly links: Record<Link, LinkTotals> = {
    tls: { uploadBytes: 0, uploadChunks: 0, downloadBytes: 0, downloadChunks: 0 },
    plain: { uploadBytes: 0, uploadChunks: 0, downloadBytes: 0, downloadChunks: 0 },
  };
  readonly dropped: Record<DropReason, number> = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
  readonly verificationFailures: Record<VerificationFailure, number> = { bad_data: 0, bad_receipt: 0 };
  downloadsDone = 0;
  /** Failed downloads (aborts included), by error code. */
  readonly downloadsFailed = new Map<string, number>();
  /** Downloads that started from chunks already verified on disk, and how many chunks they kept. */
  downloadsResumed = 0;
  chunksResumed = 0;
  /** Connections the chunk server refused before or during the handshake, by error code. */
  readonly refused = new Map<string, number>();

  /** A chunk went out to a downloader (handed to the socket). */
  uploaded(plain: boolean, bytes: number): void {
    const l = plain ? this.links.plain : this.links.tls;
    l.uploadBytes += bytes;
    l.uploadChunks++;
  }

  /** A chunk came in, verified and written. */
  downloaded(plain: boolean, bytes: number): void {
    const l = plain ? this.links.plain : this.links.tls;
    l.downloadBytes += bytes;
    l.downloadChunks++;
  }

  drop(reason: DropReason): void {
    this.dropped[reason]++;
  }

  downloadFailed(code: string): void {
    this.downloadsFailed.set(code, (this.downloadsFailed.get(code) ?? 0) + 1);
  }

  connectionRefused(code: string): void {
    this.refused.set(code, (this.refused.get(code) ?? 0) + 1);
  }
}
