/**
 * The peer daemon's Prometheus metrics (`--metrics HOST:PORT`), all named `p2p_peerd_*`. Nothing here
 * runs in the data path: every metric is read when scraped, from the plain counters the daemon keeps
 * (counters.ts) or from its state as it is then (downloads running, upload slots, the rate limiters).
 * Labels are closed catalogues (link, drop reason, error code), never a peer id or a file.
 *
 * Loaded by peerd.ts only when --metrics is given (see protocol/metrics-http.ts).
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Address } from '../protocol/index.js';
import { daemonRegistry, MetricsServer } from '../protocol/metrics-http.js';
import { DROP_REASONS, LINKS, VERIFICATION_FAILURES, type PeerCounters } from './counters.js';
import type { TokenBucket } from './rate.js';

const PREFIX = 'p2p_peerd_';

/** What the metrics read at each scrape. */
export interface PeerMetricsSource {
  counters: PeerCounters;
  downloadsActive(): number;
  uploadSlots(): { inUse: number; count: number };
  uploadBucket: TokenBucket | undefined;
  downloadBucket: TokenBucket | undefined;
  sharedFiles(): number;
  trackerConnected(): boolean;
}

type Samples = Iterable<readonly [Record<string, string>, number]>;

/** A counter whose value is a running total kept elsewhere: set from it at each scrape. */
function totalCounter(registry: Registry, name: string, help: string, labelNames: string[], read: () => Samples): void {
  new Counter({
    name: PREFIX + name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) {
        if (labelNames.length === 0) this.inc(value);
        else this.inc(labels, value);
      }
    },
  });
}

function gauge(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name: PREFIX + name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

export class PeerMetrics {
  private constructor(
    readonly registry: Registry,
    private readonly server: MetricsServer,
  ) {}

  /** Where the metrics are served (the port bound, when 0 was asked for). */
  get address(): Address {
    return this.server.address;
  }

  static async serve(address: Address, source: PeerMetricsSource, logger: Logger): Promise<PeerMetrics> {
    const registry = daemonRegistry();
    PeerMetrics.define(registry, source);
    return new PeerMetrics(registry, await MetricsServer.listen(registry, address, logger));
  }

  static define(registry: Registry, source: PeerMetricsSource): void {
    const c = source.counters;
    const byLink = (field: 'uploadBytes' | 'uploadChunks' | 'downloadBytes' | 'downloadChunks') => (): Samples => LINKS.map((link) => [{ link }, c.links[link][field]] as const);
    const linkHelp = 'link="tls" or "plain" (--plain-chunk-links on both peers)';
    totalCounter(registry, 'upload_bytes_total', `Chunk bytes sent to downloaders, by ${linkHelp}.`, ['link'], byLink('uploadBytes'));
    totalCounter(registry, 'upload_chunks_total', `Chunks sent to downloaders, by ${linkHelp}.`, ['link'], byLink('uploadChunks'));
    totalCounter(registry, 'download_bytes_total', `Chunk bytes received, verified and written, by ${linkHelp}.`, ['link'], byLink('downloadBytes'));
    totalCounter(registry, 'download_chunks_total', `Chunks received, verified and written, by ${linkHelp}.`, ['link'], byLink('downloadChunks'));

    gauge(registry, 'downloads_active', 'Downloads under way.', () => source.downloadsActive());
    totalCounter(registry, 'downloads_done_total', 'Downloads finished: verified, in place and shared.', [], () => [[{}, c.downloadsDone]]);
    totalCounter(registry, 'downloads_failed_total', 'Downloads that failed or were cancelled, by error code.', ['code'], () => [...c.downloadsFailed].map(([code, n]) => [{ code }, n] as const));
    totalCounter(registry, 'downloads_resumed_total', 'Downloads that started from chunks already verified on disk (after a restart, a crash or Ctrl-C).', [], () => [[{}, c.downloadsResumed]]);
    totalCounter(registry, 'resumed_chunks_total', 'Chunks that resumed downloads kept from disk instead of fetching them again.', [], () => [[{}, c.chunksResumed]]);
    totalCounter(registry, 'verification_failures_total', 'Chunks refused: kind="bad_data" (fails the manifest; the sender is reported) or "bad_receipt" (the receipt does not match the chunk).', ['kind'], () =>
      VERIFICATION_FAILURES.map((kind) => [{ kind }, c.verificationFailures[kind]] as const),
    );
    totalCounter(registry, 'peers_dropped_total', 'Holders a download stopped using (or could not use), by reason.', ['reason'], () => DROP_REASONS.map((reason) => [{ reason }, c.dropped[reason]] as const));

    gauge(registry, 'upload_slots_in_use', 'Upload buffers (slots) holding a chunk being read or sent now.', () => source.uploadSlots().inUse);
    gauge(registry, 'upload_slots', 'Upload buffers in all (--max-uploads).', () => source.uploadSlots().count);
    // Only the limits that are set (a direction without one never waits).
    const limited = (read: (bucket: TokenBucket) => number) => (): Samples => {
      const out: Array<readonly [Record<string, string>, number]> = [];
      if (source.uploadBucket) out.push([{ direction: 'upload' }, read(source.uploadBucket)]);
      if (source.downloadBucket) out.push([{ direction: 'download' }, read(source.downloadBucket)]);
      return out;
    };
    totalCounter(registry, 'rate_limit_waits_total', 'Chunks that had to wait for --max-upload-rate or --max-download-rate, by direction.', ['direction'], limited((b) => b.waits));
    totalCounter(registry, 'rate_limit_wait_seconds_total', 'Time those chunks waited, from asking to going, by direction.', ['direction'], limited((b) => b.waitedMs / 1000));
    totalCounter(registry, 'connections_refused_total', "Connections the chunk server refused before or during the handshake, by error code.", ['code'], () => [...c.refused].map(([code, n]) => [{ code }, n] as const));

    gauge(registry, 'shared_files', 'Files this peer shares.', () => source.sharedFiles());
    gauge(registry, 'tracker_connected', '1 while this peer has a session with a tracker, else 0.', () => (source.trackerConnected() ? 1 : 0));
  }

  async close(): Promise<void> {
    await this.server.close();
  }
}
