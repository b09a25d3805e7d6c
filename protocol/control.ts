/**
 * The catalogue of the control socket's commands (`p2p` to its peer daemon, in CONTROL requests): each
 * command's name and how its JSON arguments are checked into their type. The daemon answers only what
 * is here, with the arguments as the check returns them; a bad argument is P2P_BAD_REQUEST naming it.
 */
import { P2PError } from './errors.js';
import { isStrategyName, type StrategyName } from './messages.js';

export type RawArgs = Readonly<Record<string, unknown>>;

export interface GetArgs {
  key: string;
  out?: string | undefined;
  overwrite: boolean;
  maxPeers?: number | undefined;
  strategy?: StrategyName | undefined;
}

function key(a: RawArgs): string {
  if (typeof a.key !== 'string' || a.key.length === 0) throw new P2PError('P2P_BAD_REQUEST', 'missing key');
  return a.key;
}

function optionalString(a: RawArgs, name: string): string | undefined {
  const v = a[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new P2PError('P2P_BAD_REQUEST', `${name} must be a string`);
  return v;
}

const none = (): Record<string, never> => ({});

/** Most hits one search asks a tracker for (a tracker answers at most this many). */
export const MAX_SEARCH_HITS = 10_000;

export interface SearchArgs {
  text: string;
  /** Hits asked for, 1 to MAX_SEARCH_HITS (that many when not given). */
  limit?: number | undefined;
}

function searchArgs(a: RawArgs): SearchArgs {
  const limit = a.limit === undefined || a.limit === null ? MAX_SEARCH_HITS : a.limit;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_SEARCH_HITS) throw new P2PError('P2P_BAD_REQUEST', `--limit must be an integer from 1 to ${MAX_SEARCH_HITS}`);
  return { text: optionalString(a, 'text') ?? '', limit };
}

export const CONTROL_COMMANDS = {
  status: none,
  files: none,
  share: (a: RawArgs): { paths: string[] } => {
    const paths = a.paths;
    if (!Array.isArray(paths) || paths.length === 0 || !paths.every((x) => typeof x === 'string')) throw new P2PError('P2P_BAD_REQUEST', 'share needs at least one path');
    return { paths: paths as string[] };
  },
  unshare: (a: RawArgs): { key: string } => ({ key: key(a) }),
  search: searchArgs,
  /** `search` with its answer as `{ hits, truncated }` (since 0.2; `search` answers the hits alone, as 0.1 did). */
  searchResult: searchArgs,
  resolve: (a: RawArgs): { key: string; out?: string | undefined } => ({ key: key(a), out: optionalString(a, 'out') }),
  get: (a: RawArgs): GetArgs => {
    const maxPeers = a.maxPeers === undefined || a.maxPeers === null ? undefined : Number(a.maxPeers);
    if (maxPeers !== undefined && (!Number.isInteger(maxPeers) || maxPeers < 1)) throw new P2PError('P2P_BAD_REQUEST', '--max-peers must be a positive integer');
    const strategy = a.strategy === undefined || a.strategy === null ? undefined : a.strategy;
    if (strategy !== undefined && !isStrategyName(strategy)) throw new P2PError('P2P_BAD_REQUEST', `unknown strategy '${String(strategy)}'`);
    return { key: key(a), out: optionalString(a, 'out'), overwrite: a.overwrite === true, maxPeers, strategy };
  },
  transfers: none,
  report: (a: RawArgs): { key: string; reason: string } => ({ key: key(a), reason: optionalString(a, 'reason') ?? '' }),
} as const;

export type CommandName = keyof typeof CONTROL_COMMANDS;
/** The arguments of `command`, as its check returns them. */
export type ControlArgs<C extends CommandName> = ReturnType<(typeof CONTROL_COMMANDS)[C]>;

export function isCommandName(name: string): name is CommandName {
  return Object.hasOwn(CONTROL_COMMANDS, name);
}
