/**
 * `--metrics HOST:PORT`, shared by both daemons: a registry of their own (several daemons in one process,
 * as in the tests, must not share prom-client's global one) with the default process and Node metrics,
 * served as Prometheus text on GET /metrics over plain HTTP; any other path is a 404.
 *
 * Only the daemons' entry points into metrics import this file, and they do so only when --metrics is
 * given: prom-client is about 100 ms of start-up and a few MB that a daemon without it never pays.
 */
import http from 'node:http';
import type net from 'node:net';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { formatAddress, type Address } from './address.js';

/** A registry for one daemon, with prom-client's default process and Node.js metrics on it. */
export function daemonRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}

export class MetricsServer {
  private readonly server: http.Server;

  private constructor(
    private readonly registry: Registry,
    readonly address: Address,
    server: http.Server,
  ) {
    this.server = server;
  }

  /**
   * Serves `registry` on `address` (port 0: a free port; `address` then says which). Rejects with a message
   * that names --metrics when the address cannot be bound (in use, not this host's).
   */
  static async listen(registry: Registry, address: Address, logger: Logger): Promise<MetricsServer> {
    const server = http.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(new Error(metricsListenProblem(address, err))));
      server.listen(address.port, address.host, () => resolve());
    });
    const bound = { host: address.host, port: (server.address() as net.AddressInfo).port };
    const metrics = new MetricsServer(registry, bound, server);
    server.on('request', (req, res) => metrics.onRequest(req, res, logger));
    logger.info({ metrics: `http://${formatAddress(bound.host, bound.port)}/metrics` }, 'serving metrics');
    return metrics;
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse, logger: Logger): void {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD' }).end('only GET\n');
      return;
    }
    this.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (err: unknown) => {
        logger.warn({ err }, 'could not collect metrics');
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('could not collect metrics\n');
      },
    );
  }

  /** Stops serving; a scraper's kept-alive connection does not hold the daemon's shutdown up. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }
}

function metricsListenProblem(address: Address, err: NodeJS.ErrnoException): string {
  const where = `--metrics ${formatAddress(address.host, address.port)}`;
  if (err.code === 'EADDRINUSE') return `${where}: the address is already in use (by another daemon's --metrics, or another program); choose a free port`;
  if (err.code === 'EADDRNOTAVAIL') return `${where}: that address is not one of this host's`;
  if (err.code === 'EACCES') return `${where}: permission denied (ports below 1024 need privileges)`;
  return `${where}: ${err.message}`;
}
