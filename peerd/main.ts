#!/usr/bin/env node
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { parseAddress, parseAddressList } from '../protocol/index.js';
import { LOG_LEVELS, onShutdownSignal, packageVersion, stderrLogger, usageError } from '../protocol/program.js';
import { PeerDaemon } from './peerd.js';

const PROGRAM = 'p2p-peerd';

const argv = yargs(hideBin(process.argv))
  .scriptName(PROGRAM)
  .usage('$0 --trackers A,B,... --share DIR --data DIR [options]\n\nThe p2pshare peer daemon: shares files, serves chunks, downloads from many peers at once.')
  .option('trackers', { type: 'string', demandOption: true, describe: 'the trackers in rank order' })
  .option('share', { type: 'string', demandOption: true, describe: 'folder whose files it shares; downloads land here unless --out says otherwise' })
  .option('data', { type: 'string', demandOption: true, describe: 'identity key, partial downloads, caches (created with mode 0700)' })
  .option('listen', { type: 'string', default: '0.0.0.0:0', describe: 'where it serves chunks to other peers' })
  .option('advertise', { type: 'string', describe: 'the address other peers should use, where it differs from what the tracker sees' })
  .option('socket', { type: 'string', describe: 'the control socket for p2p (default DATA/peerd.sock)' })
  .option('upload-slots', { type: 'number', default: 8, describe: 'chunks read or sent at once (each holds a 1 MiB buffer)' })
  .option('log-level', { type: 'string', default: 'info', choices: LOG_LEVELS })
  .strict()
  .version(packageVersion())
  .help()
  .fail((msg, err) => usageError(PROGRAM, msg ?? err?.message ?? 'bad arguments'))
  .parseSync();

const log = stderrLogger(argv['log-level'], PROGRAM);
let daemon: PeerDaemon;
try {
  if (!Number.isInteger(argv['upload-slots']) || argv['upload-slots'] < 1) usageError(PROGRAM, '--upload-slots must be a positive integer');
  daemon = new PeerDaemon({
    trackers: parseAddressList(argv.trackers),
    shareDir: argv.share,
    dataDir: argv.data,
    listen: parseAddress(argv.listen, true),
    advertise: argv.advertise ? parseAddress(argv.advertise) : undefined,
    socketPath: argv.socket,
    uploadSlots: argv['upload-slots'],
    logger: log,
    version: packageVersion(),
  });
} catch (err) {
  usageError(PROGRAM, (err as Error).message);
}
onShutdownSignal(log, () => daemon.close());
daemon.start().catch((err: Error) => {
  log.fatal({ err }, 'cannot start');
  process.stderr.write(`${PROGRAM}: cannot start: ${err.message}\n`);
  process.exit(1);
});
