#!/usr/bin/env node
import { hideBin } from 'yargs/helpers';
import { LOG_OPTIONS, METRICS_OPTIONS, metricsAddress, onShutdownSignal, packageVersion, setupFailed, stderrLogger, usageError } from '../protocol/program.js';
import { loadSettings, type OptionTable } from '../protocol/settings.js';
import { STRATEGY_NAMES, type StrategyName } from '../protocol/strategy-names.js';
import { PEER_DEFAULTS } from './defaults.js';
import { parseRate } from './rate.js';

const PROGRAM = 'p2p-peerd';

/** Every option of p2p-peerd, once: the command line, the config file and --print-config follow it. */
const OPTIONS = {
  trackers: { type: 'string', list: true, required: true, describe: "the trackers in rank order; ID@HOST:PORT pins a tracker's key (else it is learned on first contact)" },
  share: { type: 'string', required: true, describe: 'folder whose files it shares; downloads land here unless --out says otherwise' },
  data: { type: 'string', required: true, describe: 'identity key, partial downloads, caches (created with mode 0700)' },
  listen: { type: 'string', default: '0.0.0.0:0', describe: 'where it serves chunks to other peers' },
  advertise: { type: 'string', describe: 'the address other peers should use, where it differs from what the tracker sees' },
  socket: { type: 'string', describe: 'the control socket for p2p (default DATA/peerd.sock)' },
  'max-uploads': { type: 'number', default: PEER_DEFAULTS.maxUploads, describe: 'chunks read or sent at once, to all peers together (each holds a 1 MiB buffer)' },
  'max-upload-rate': { type: 'string', default: '0', describe: 'upload limit in bytes/s (10M, 500k; 100mbit); 0 = unlimited' },
  'max-download-rate': { type: 'string', default: '0', describe: 'download limit in bytes/s (10M, 500k; 100mbit); 0 = unlimited' },
  strategy: { type: 'string', default: 'adaptive', choices: STRATEGY_NAMES, describe: "peer choice: keep measuring and adapt, or the original design's fixed rule" },
  'max-connections': { type: 'number', default: PEER_DEFAULTS.maxConnections, describe: 'connections from other peers, in total' },
  'max-connections-per-ip': { type: 'number', default: PEER_DEFAULTS.maxConnectionsPerIp, describe: 'connections from one address' },
  'handshake-timeout-ms': { type: 'number', default: PEER_DEFAULTS.handshakeTimeoutMs, describe: 'a connecting peer must prove its key within this' },
  'read-timeout-ms': { type: 'number', default: PEER_DEFAULTS.readTimeoutMs, describe: 'a request frame must arrive whole within this' },
  'plain-chunk-links': { type: 'boolean', default: false, describe: 'chunk connections with peers that also set this skip TLS (less CPU per byte; chunks are still verified and receipts signed, but travel in clear): only on a network you trust' },
  ...METRICS_OPTIONS,
  ...LOG_OPTIONS,
} as const satisfies OptionTable;

const argv = loadSettings(
  PROGRAM,
  '$0 --trackers A,B,... --share DIR --data DIR [options]\n\nThe p2pshare peer daemon: shares files, serves chunks, downloads from many peers at once.',
  OPTIONS,
  hideBin(process.argv),
);

// The daemon's code is loaded once the flags are read: --help, --version, --print-config and most usage
// errors answer without it (as daemon/main.ts).
const [{ parseAddress, parsePinnedAddressList }, { PeerDaemon }] = await Promise.all([import('../protocol/index.js'), import('./peerd.js')]);

const log = stderrLogger(argv['log-level'], PROGRAM, argv['log-format']);
let daemon: InstanceType<typeof PeerDaemon>;
try {
  if (!Number.isInteger(argv['max-uploads']) || argv['max-uploads'] < 1) usageError(PROGRAM, '--max-uploads must be a positive integer');
  const positive = (flag: string, v: number): number => (Number.isInteger(v) && v > 0 ? v : usageError(PROGRAM, `--${flag} must be a positive integer`));
  const rate = (flag: string, v: string): number => {
    try {
      return parseRate(v);
    } catch (err) {
      return usageError(PROGRAM, `--${flag}: ${(err as Error).message}`);
    }
  };
  daemon = new PeerDaemon({
    trackers: parsePinnedAddressList(argv.trackers),
    shareDir: argv.share,
    dataDir: argv.data,
    listen: parseAddress(argv.listen, true),
    advertise: argv.advertise ? parseAddress(argv.advertise) : undefined,
    socketPath: argv.socket,
    maxUploads: argv['max-uploads'],
    maxConnections: positive('max-connections', argv['max-connections']),
    maxConnectionsPerIp: positive('max-connections-per-ip', argv['max-connections-per-ip']),
    handshakeTimeoutMs: positive('handshake-timeout-ms', argv['handshake-timeout-ms']),
    readTimeoutMs: positive('read-timeout-ms', argv['read-timeout-ms']),
    maxUploadRate: rate('max-upload-rate', argv['max-upload-rate']),
    maxDownloadRate: rate('max-download-rate', argv['max-download-rate']),
    strategy: argv.strategy as StrategyName,
    plainChunkLinks: argv['plain-chunk-links'],
    metrics: metricsAddress(PROGRAM, argv.metrics),
    logger: log,
    version: packageVersion(),
  });
} catch (err) {
  setupFailed(PROGRAM, log, err);
}
onShutdownSignal(log, () => daemon.close());
daemon.start().catch((err: Error) => {
  log.fatal({ err }, 'cannot start');
  process.stderr.write(`${PROGRAM}: cannot start: ${err.message}\n`);
  process.exit(1);
});
