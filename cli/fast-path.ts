/**
 * The common `p2p` command lines, recognised without yargs. Loading yargs costs more than the rest of a
 * `p2p status` together (issue 8), yet most command lines are one of a few simple shapes. This parser
 * accepts only those shapes, written in the plainest way, and gives up on anything else (help, errors,
 * unusual spellings such as `--json=false` or `--socket=-x`), which then goes to the full parser in
 * cli/arguments.ts. So it never has to reproduce yargs' corner cases or its messages, only agree with it
 * on what it accepts: test/unit/cli-fast-path.test.ts checks that against yargs itself.
 */
import type { Globals, Invocation } from './commands.js';
import { isStrategyName, type StrategyName } from '../protocol/strategy-names.js';

/** How many positional arguments each command recognised here takes after its name. */
const ARITY = {
  status: { min: 0, max: 0 },
  files: { min: 0, max: 0 },
  transfers: { min: 0, max: 0 },
  search: { min: 0, max: 1 },
  unshare: { min: 1, max: 1 },
  report: { min: 1, max: 1 },
  share: { min: 1, max: Infinity },
  get: { min: 1, max: 1 },
} as const;

type FastCommand = keyof typeof ARITY;

const isFastCommand = (word: string): word is FastCommand => Object.hasOwn(ARITY, word);

/** A value as yargs would take it for a string flag; anything that could read as a flag itself is refused. */
const plainValue = (value: string | undefined): value is string => value !== undefined && value !== '' && !value.startsWith('-');

/**
 * The Invocation that `args` (the command line without node and the script) names, `'version'` for a
 * lone `--version`, or undefined when the full parser must decide.
 */
export function parseFast(args: readonly string[]): Invocation | 'version' | undefined {
  if (args.length === 1 && args[0] === '--version') return 'version';
  let command: FastCommand | undefined;
  const positionals: string[] = [];
  let socket: string | undefined;
  let json = false;
  let reason: string | undefined;
  const getFlags: GetFlags = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--json') {
      // yargs takes a following `true` or `false` as the flag's value.
      if (json || args[i + 1] === 'true' || args[i + 1] === 'false') return undefined;
      json = true;
    } else if (arg === '--socket' || arg.startsWith('--socket=')) {
      const value = arg === '--socket' ? args[++i] : arg.slice('--socket='.length);
      if (socket !== undefined || !plainValue(value)) return undefined;
      socket = value;
    } else if (command === 'report' && (arg === '--reason' || arg.startsWith('--reason='))) {
      const value = arg === '--reason' ? args[++i] : arg.slice('--reason='.length);
      if (reason !== undefined || !plainValue(value)) return undefined;
      reason = value;
    } else if (command === 'get' && arg.startsWith('--')) {
      const words = takeGetFlag(args, i, getFlags);
      if (words === 0) return undefined;
      i += words - 1;
    } else if (arg.startsWith('-') || arg === 'help') {
      // yargs shows the help for a last positional `help`, as for --help.
      return undefined;
    } else if (command === undefined) {
      if (!isFastCommand(arg)) return undefined;
      command = arg;
    } else {
      positionals.push(arg);
    }
  }
  if (command === undefined || positionals.length < ARITY[command].min || positionals.length > ARITY[command].max) return undefined;
  const globals: Globals = { socket, json };
  switch (command) {
    case 'status':
    case 'files':
    case 'transfers':
      return { command, globals };
    case 'search':
      return { command, globals, text: positionals[0] ?? '' };
    case 'unshare':
      return { command, globals, key: positionals[0]! };
    case 'report':
      return { command, globals, key: positionals[0]!, reason: reason ?? '' };
    case 'share':
      return { command, globals, paths: positionals };
    case 'get':
      return { command, globals, key: positionals[0]!, out: getFlags.out, overwrite: getFlags.overwrite, maxPeers: getFlags.maxPeers, progress: getFlags.progress ?? true, strategy: getFlags.strategy };
  }
}

/** `get`'s own flags, as the fast path has read them so far. */
interface GetFlags {
  out?: string;
  overwrite?: boolean;
  maxPeers?: number;
  strategy?: StrategyName;
  progress?: boolean;
}

const GET_BOOLEANS: Record<string, ['overwrite' | 'progress', boolean]> = {
  '--overwrite': ['overwrite', true],
  '--no-overwrite': ['overwrite', false],
  '--progress': ['progress', true],
  '--no-progress': ['progress', false],
};

/**
 * One of `get`'s own flags at `args[i]` (its value in the same word after `=`, or in the next), put in
 * `flags`: the words it took, or 0 for anything unusual (a flag given twice, a boolean followed by
 * `true`/`false`, which yargs would take as its value, a value that could read as a flag, a number yargs
 * might read otherwise).
 */
function takeGetFlag(args: readonly string[], i: number, flags: GetFlags): number {
  const arg = args[i]!;
  if (Object.hasOwn(GET_BOOLEANS, arg)) {
    const [name, value] = GET_BOOLEANS[arg]!;
    if (flags[name] !== undefined || args[i + 1] === 'true' || args[i + 1] === 'false') return 0;
    flags[name] = value;
    return 1;
  }
  const eq = arg.indexOf('=');
  const name = eq < 0 ? arg : arg.slice(0, eq);
  const value = eq < 0 ? args[i + 1] : arg.slice(eq + 1);
  const words = eq < 0 ? 2 : 1;
  if (!plainValue(value)) return 0;
  switch (name) {
    case '--out':
      if (flags.out !== undefined) return 0;
      flags.out = value;
      return words;
    case '--max-peers':
      // Plain decimal only: yargs reads 1e3, 0x10 or 007 as numbers of its own.
      if (flags.maxPeers !== undefined || !/^[1-9][0-9]{0,5}$/.test(value)) return 0;
      flags.maxPeers = Number(value);
      return words;
    case '--strategy':
      if (flags.strategy !== undefined || !isStrategyName(value)) return 0;
      flags.strategy = value;
      return words;
    default:
      return 0;
  }
}
