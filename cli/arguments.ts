/**
 * The full `p2p` argument parser (yargs): every command and flag, --help, --version and usage errors
 * (exit code 2). It turns a command line into an Invocation and runs nothing itself. main.ts loads it only
 * for the command lines that cli/fast-path.ts does not recognise, since loading yargs alone costs more
 * than the rest of a `p2p status`.
 */
import yargs, { type Argv } from 'yargs';
import { MAX_SEARCH_HITS, STRATEGY_NAMES, type StrategyName } from '../protocol/client.js';
import { packageVersion, usageError } from '../protocol/program.js';
import { PROGRAM, type Globals, type Invocation } from './commands.js';

const globals = (argv: Record<string, unknown>): Globals => ({ socket: argv.socket as string | undefined, json: argv.json === true });

const adminArgs = (argv: Record<string, unknown>): { globals: Globals; tracker: string; tokenFile: string } => ({
  globals: globals(argv),
  tracker: String(argv.tracker),
  tokenFile: String(argv['token-file']),
});

/**
 * The yargs parser for `args` (the command line without node and the script). The command a line names
 * is handed to `onInvocation`; a usage error goes to `onUsageError`. --help and --version print and exit.
 */
export function buildParser(args: string[], onInvocation: (invocation: Invocation) => void, onUsageError: (message: string) => never): Argv {
  return yargs(args)
    .scriptName(PROGRAM)
    .usage('$0 <command> [options]\n\nThe p2pshare command line; talks to the local p2p-peerd.')
    .option('socket', { type: 'string', global: true, describe: 'the p2p-peerd control socket (env P2P_SOCKET; default ~/.p2pshare/peerd.sock)' })
    .option('json', { type: 'boolean', global: true, default: false, describe: 'one JSON document on stdout' })
    .command('status', "this peer's id, addresses, tracker, files shared and transfers", {}, (argv) => onInvocation({ command: 'status', globals: globals(argv) }))
    .command('files', 'the files this peer shares', {}, (argv) => onInvocation({ command: 'files', globals: globals(argv) }))
    .command('share <paths..>', 'share more files, in place', (y: Argv) => y.positional('paths', { type: 'string', array: true, demandOption: true }), (argv) =>
      onInvocation({ command: 'share', globals: globals(argv), paths: argv.paths as string[] }),
    )
    .command('unshare <key>', 'stop sharing a file (NAME or ID)', (y: Argv) => y.positional('key', { type: 'string', demandOption: true }), (argv) =>
      onInvocation({ command: 'unshare', globals: globals(argv), key: String(argv.key) }),
    )
    .command(
      'search [text]',
      "the network's files whose name contains TEXT",
      (y: Argv) => y.positional('text', { type: 'string' }).option('limit', { type: 'number', requiresArg: true, describe: `list at most N files (1-${MAX_SEARCH_HITS}; default ${MAX_SEARCH_HITS})` }),
      (argv) => {
        const limit = argv.limit as number | undefined;
        if (limit !== undefined && (!Number.isInteger(limit) || limit < 1 || limit > MAX_SEARCH_HITS)) onUsageError(`--limit must be an integer from 1 to ${MAX_SEARCH_HITS}`);
        onInvocation({ command: 'search', globals: globals(argv), text: argv.text === undefined ? '' : String(argv.text), limit });
      },
    )
    .command(
      'get <key>',
      'download a file (NAME or ID) from several peers at once',
      (y: Argv) =>
        y
          .positional('key', { type: 'string', demandOption: true })
          .option('out', { type: 'string', describe: 'where to save it (a file or a folder)' })
          .option('overwrite', { type: 'boolean', describe: 'replace an existing file (--no-overwrite: never)' })
          .option('max-peers', { type: 'number', describe: 'use at most K peers' })
          .option('strategy', { type: 'string', choices: [...STRATEGY_NAMES], describe: "peer choice (default: the daemon's)" })
          .option('progress', { type: 'boolean', default: true, describe: 'show a progress bar on a terminal (--no-progress to hide)' }),
      (argv) => {
        const maxPeers = argv['max-peers'] as number | undefined;
        if (maxPeers !== undefined && (!Number.isInteger(maxPeers) || maxPeers < 1)) onUsageError('--max-peers must be a positive integer');
        onInvocation({
          command: 'get',
          globals: globals(argv),
          key: String(argv.key),
          out: argv.out as string | undefined,
          overwrite: argv.overwrite as boolean | undefined,
          maxPeers,
          progress: argv.progress !== false,
          strategy: argv.strategy as StrategyName | undefined,
        });
      },
    )
    .command('transfers', 'recent downloads', {}, (argv) => onInvocation({ command: 'transfers', globals: globals(argv) }))
    .command(
      'report <key>',
      "report this peer's last download of a file: its senders go before the tracker's report policy",
      (y: Argv) => y.positional('key', { type: 'string', demandOption: true }).option('reason', { type: 'string', default: '', describe: 'why' }),
      (argv) => onInvocation({ command: 'report', globals: globals(argv), key: String(argv.key), reason: String(argv.reason ?? '') }),
    )
    .command('admin', 'administer the trackers (needs --tracker and --token-file)', (y: Argv) =>
      y
        .option('tracker', { type: 'string', demandOption: true, describe: 'a tracker HOST:PORT, or ID@HOST:PORT to pin its key' })
        .option('token-file', { type: 'string', demandOption: true, describe: 'file holding the admin token' })
        .command('status', "every tracker's address, role, term and replication state", {}, (argv) => onInvocation({ command: 'admin status', ...adminArgs(argv) }))
        .command('reports', 'the reports received', {}, (argv) => onInvocation({ command: 'admin reports', ...adminArgs(argv) }))
        .command('blacklist', 'the blacklist: ls | add TARGET | rm TARGET', (yb: Argv) =>
          yb
            .command('ls', 'list the blacklist', {}, (argv) => onInvocation({ command: 'admin blacklist ls', ...adminArgs(argv) }))
            .command('add <target>', 'ban a peer id or an IP address', (ya: Argv) => ya.positional('target', { type: 'string', demandOption: true }).option('reason', { type: 'string', default: '' }), (argv) =>
              onInvocation({ command: 'admin blacklist add', ...adminArgs(argv), target: String(argv.target), reason: String(argv.reason ?? '') }),
            )
            .command('rm <target>', 'lift a ban', (ya: Argv) => ya.positional('target', { type: 'string', demandOption: true }), (argv) =>
              onInvocation({ command: 'admin blacklist rm', ...adminArgs(argv), target: String(argv.target) }),
            )
            .demandCommand(1, 'blacklist needs ls, add TARGET or rm TARGET'),
        )
        .demandCommand(1, 'admin needs status, blacklist or reports'),
    )
    // The script calls `p2p --get-yargs-completions ...`, which the fast path leaves to this parser.
    .completion('completion', 'print a bash/zsh completion script (source it from ~/.bashrc or ~/.zshrc)')
    .demandCommand(1, 'a command is required')
    .strict()
    .version(packageVersion())
    .help()
    .fail((msg, err) => onUsageError(msg ?? err?.message ?? 'bad arguments'));
}

/**
 * Parses a command line as `p2p` does: the Invocation it names, or undefined when there is nothing to run.
 * A usage error exits with code 2; --help and --version print and exit 0.
 */
export async function parseArguments(args: string[]): Promise<Invocation | undefined> {
  let invocation: Invocation | undefined;
  const onUsageError = (message: string): never => usageError(PROGRAM, message);
  try {
    await buildParser(args, (i) => (invocation = i), onUsageError).parseAsync();
  } catch (err) {
    onUsageError((err as Error).message);
  }
  return invocation;
}
