#!/usr/bin/env node
import fs from 'node:fs';
import { hideBin } from 'yargs/helpers';
import path from 'node:path';
import { LOG_OPTIONS, METRICS_OPTIONS, metricsAddress, onShutdownSignal, setupFailed, stderrLogger, usageError } from '../protocol/program.js';
import { loadSettings, type OptionTable } from '../protocol/settings.js';
import { DEFAULTS } from './defaults.js';

const PROGRAM = 'p2p-tracker';

/** Every option of p2p-tracker, once: the command line, the config file and --print-config follow it. */
const OPTIONS = {
  listen: { type: 'string', required: true, describe: 'where it accepts peers and the other trackers' },
  cluster: { type: 'string', list: true, describe: "every tracker in rank order, this one included (default: --listen alone); ID@HOST:PORT pins a tracker's key" },
  data: { type: 'string', required: true, describe: 'durable state folder (created if missing)' },
  'admin-token-file': { type: 'string', describe: 'file holding the admin secret; without it admin commands are refused' },
  'handshake-timeout-ms': { type: 'number', default: DEFAULTS.handshakeTimeoutMs, describe: 'a connection must finish its handshake within this' },
  'read-timeout-ms': { type: 'number', default: DEFAULTS.readTimeoutMs, describe: 'a frame must arrive whole within this' },
  'max-in-flight': { type: 'number', default: DEFAULTS.maxInFlight, describe: 'requests in flight per connection' },
  'heartbeat-ms': { type: 'number', default: DEFAULTS.heartbeatMs, describe: 'heartbeat period between trackers' },
  'failover-ms': { type: 'number', default: DEFAULTS.failoverMs, describe: 'silence after which a backup acts (two heartbeats once the main refuses connections: its process died)' },
  'report-policy': { type: 'string', default: 'immediate', describe: 'immediate | threshold:K | review' },
  'lease-ms': { type: 'number', default: DEFAULTS.leaseMs, describe: 'a silent peer is dropped after this' },
  'takeback-stragglers': { type: 'number', default: DEFAULTS.takebackStragglers, describe: "a returning higher-ranked tracker takes command back once it lacks the standby sessions of at most this many of the main's peers (or a twentieth of them, if more)" },
  'takeback-wait-ms': { type: 'number', default: DEFAULTS.takebackWaitMs, describe: "a main hands command back to a returning higher-ranked tracker once that tracker has its peers' standby sessions, or after this long at most (0: at once)" },
  'peer-heartbeats-per-s': { type: 'number', default: DEFAULTS.peerHeartbeatsPerSecond, describe: 'PINGs a second all peers together may send; past that, peers ping less often than every 300 ms' },
  'max-connections': { type: 'number', default: DEFAULTS.maxConnections },
  'max-connections-per-ip': { type: 'number', default: DEFAULTS.maxConnectionsPerIp },
  'max-files-per-register': { type: 'number', default: DEFAULTS.maxFilesPerRegister },
  'max-files-per-peer': { type: 'number', default: DEFAULTS.maxFilesPerPeer, describe: 'files one peer may register in all' },
  'max-name-bytes-per-peer': { type: 'number', default: DEFAULTS.maxNameBytesPerPeer, describe: "bytes of one peer's file names in all" },
  'reports-per-minute': { type: 'number', default: DEFAULTS.reportsPerMinute },
  'print-id': { type: 'boolean', default: false, commandLineOnly: true, describe: "print the id of this tracker's key (made in --data if missing), to pin as ID@HOST:PORT, and exit" },
  ...METRICS_OPTIONS,
  ...LOG_OPTIONS,
} as const satisfies OptionTable;

const argv = loadSettings(
  PROGRAM,
  '$0 --listen HOST:PORT --data DIR [options]\n\nThe p2pshare tracker: knows who holds which file; keeps the blacklist. Never carries file data.',
  OPTIONS,
  hideBin(process.argv),
);

// The tracker's code is loaded once the flags are read: --help, --version, --print-config and most usage
// errors answer without it (250 instead of 300 ms on the machine of bench/results/).
const [{ loadIdentityFile, parseAddress, parsePinnedAddressList }, { ensurePrivateDir }, { parseReportPolicy }, { Tracker }] = await Promise.all([
  import('../protocol/index.js'),
  import('../protocol/local-files.js'),
  import('./reports.js'),
  import('./tracker.js'),
]);

if (argv['print-id']) {
  try {
    ensurePrivateDir(argv.data, { warn: () => undefined });
    process.stdout.write(`${loadIdentityFile(path.join(argv.data, 'identity.key')).keys.peerId}\n`);
    process.exit(0);
  } catch (err) {
    process.stderr.write(`${PROGRAM}: cannot read or make the key in ${argv.data}: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
const log = stderrLogger(argv['log-level'], PROGRAM, argv['log-format']);
let tracker: InstanceType<typeof Tracker>;
try {
  const listen = parseAddress(argv.listen, true);
  const cluster = argv.cluster ? parsePinnedAddressList(argv.cluster) : undefined;
  for (const [flag, v] of [['heartbeat-ms', argv['heartbeat-ms']], ['failover-ms', argv['failover-ms']], ['lease-ms', argv['lease-ms']]] as const) {
    if (!Number.isInteger(v) || v <= 0) usageError(PROGRAM, `--${flag} must be a positive integer`);
  }
  const readSecret = (flag: string, file: string | undefined): string | undefined => {
    if (!file) return undefined;
    let v = '';
    try {
      v = fs.readFileSync(file, 'utf8').trim();
    } catch (err) {
      usageError(PROGRAM, `cannot read --${flag}: ${(err as Error).message}`);
    }
    if (!v) usageError(PROGRAM, `--${flag} is empty`);
    return v;
  };
  const adminToken = readSecret('admin-token-file', argv['admin-token-file']);
  for (const flag of ['handshake-timeout-ms', 'read-timeout-ms', 'max-in-flight', 'max-files-per-peer', 'max-name-bytes-per-peer'] as const) {
    if (!Number.isInteger(argv[flag]) || argv[flag] <= 0) usageError(PROGRAM, `--${flag} must be a positive integer`);
  }
  for (const flag of ['takeback-wait-ms', 'takeback-stragglers'] as const) {
    if (!Number.isInteger(argv[flag]) || argv[flag] < 0) usageError(PROGRAM, `--${flag} must be a whole number, 0 or more`);
  }
  tracker = new Tracker({
    listen,
    cluster,
    dataDir: argv.data,
    adminToken,
    handshakeTimeoutMs: argv['handshake-timeout-ms'],
    readTimeoutMs: argv['read-timeout-ms'],
    maxInFlight: argv['max-in-flight'],
    heartbeatMs: argv['heartbeat-ms'],
    failoverMs: argv['failover-ms'],
    reportPolicy: parseReportPolicy(argv['report-policy']),
    leaseMs: argv['lease-ms'],
    takebackWaitMs: argv['takeback-wait-ms'],
    takebackStragglers: argv['takeback-stragglers'],
    peerHeartbeatsPerSecond: argv['peer-heartbeats-per-s'],
    maxConnections: argv['max-connections'],
    maxConnectionsPerIp: argv['max-connections-per-ip'],
    maxFilesPerRegister: argv['max-files-per-register'],
    maxFilesPerPeer: argv['max-files-per-peer'],
    maxNameBytesPerPeer: argv['max-name-bytes-per-peer'],
    reportsPerMinute: argv['reports-per-minute'],
    logger: log,
    metrics: metricsAddress(PROGRAM, argv.metrics),
  });
} catch (err) {
  setupFailed(PROGRAM, log, err);
}
onShutdownSignal(log, () => tracker.close());
tracker.listen().catch((err: Error) => {
  log.fatal({ err }, 'cannot start');
  process.stderr.write(`${PROGRAM}: cannot start: ${err.message}\n`);
  process.exit(1);
});
