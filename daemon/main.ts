#!/usr/bin/env node
import fs from 'node:fs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { parseAddress, parseAddressList } from '../protocol/index.js';
import { LOG_LEVELS, onShutdownSignal, packageVersion, stderrLogger, usageError } from '../protocol/program.js';
import { parseReportPolicy } from './reports.js';
import { DEFAULTS, Tracker } from './tracker.js';

const PROGRAM = 'p2p-tracker';

const argv = yargs(hideBin(process.argv))
  .scriptName(PROGRAM)
  .usage('$0 --listen HOST:PORT --data DIR [options]\n\nThe p2pshare tracker: knows who holds which file; keeps the blacklist. Never carries file data.')
  .option('listen', { type: 'string', demandOption: true, describe: 'where it accepts peers and the other trackers' })
  .option('cluster', { type: 'string', describe: 'every tracker in rank order, this one included (default: --listen alone)' })
  .option('data', { type: 'string', demandOption: true, describe: 'durable state folder (created if missing)' })
  .option('admin-token-file', { type: 'string', describe: 'file holding the admin secret; without it admin commands are refused' })
  .option('heartbeat-ms', { type: 'number', default: DEFAULTS.heartbeatMs, describe: 'heartbeat period between trackers' })
  .option('failover-ms', { type: 'number', default: DEFAULTS.failoverMs, describe: 'silence after which a backup acts' })
  .option('report-policy', { type: 'string', default: 'immediate', describe: 'immediate | threshold:K | review' })
  .option('lease-ms', { type: 'number', default: DEFAULTS.leaseMs, describe: 'a silent peer is dropped after this' })
  .option('max-connections', { type: 'number', default: DEFAULTS.maxConnections })
  .option('max-connections-per-ip', { type: 'number', default: DEFAULTS.maxConnectionsPerIp })
  .option('max-files-per-register', { type: 'number', default: DEFAULTS.maxFilesPerRegister })
  .option('reports-per-minute', { type: 'number', default: DEFAULTS.reportsPerMinute })
  .option('log-level', { type: 'string', default: 'info', choices: LOG_LEVELS })
  .strict()
  .version(packageVersion())
  .help()
  .fail((msg, err) => usageError(PROGRAM, msg ?? err?.message ?? 'bad arguments'))
  .parseSync();

const log = stderrLogger(argv['log-level'], PROGRAM);
let tracker: Tracker;
try {
  const listen = parseAddress(argv.listen, true);
  const cluster = argv.cluster ? parseAddressList(argv.cluster) : undefined;
  for (const [flag, v] of [['heartbeat-ms', argv['heartbeat-ms']], ['failover-ms', argv['failover-ms']], ['lease-ms', argv['lease-ms']]] as const) {
    if (!Number.isInteger(v) || v <= 0) usageError(PROGRAM, `--${flag} must be a positive integer`);
  }
  let adminToken: string | undefined;
  if (argv['admin-token-file']) {
    try {
      adminToken = fs.readFileSync(argv['admin-token-file'], 'utf8').trim();
    } catch (err) {
      usageError(PROGRAM, `cannot read --admin-token-file: ${(err as Error).message}`);
    }
    if (!adminToken) usageError(PROGRAM, '--admin-token-file is empty');
  }
  tracker = new Tracker({
    listen,
    cluster,
    dataDir: argv.data,
    adminToken,
    heartbeatMs: argv['heartbeat-ms'],
    failoverMs: argv['failover-ms'],
    reportPolicy: parseReportPolicy(argv['report-policy']),
    leaseMs: argv['lease-ms'],
    maxConnections: argv['max-connections'],
    maxConnectionsPerIp: argv['max-connections-per-ip'],
    maxFilesPerRegister: argv['max-files-per-register'],
    reportsPerMinute: argv['reports-per-minute'],
    logger: log,
  });
} catch (err) {
  usageError(PROGRAM, (err as Error).message);
}
onShutdownSignal(log, () => tracker.close());
tracker.listen().catch((err: Error) => {
  log.fatal({ err }, 'cannot start');
  process.stderr.write(`${PROGRAM}: cannot listen on ${argv.listen}: ${err.message}\n`);
  process.exit(1);
});
