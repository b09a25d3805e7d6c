/**
 * How a download chooses its peers (`--strategy`, the control socket's `get`): the names every side
 * uses; peerd/strategies.ts has one implementation per name. A module of its own, importing nothing, so
 * the CLI's fast path (cli/fast-path.ts) can check a name without loading the message catalogue.
 */
export const STRATEGY_NAMES = ['adaptive', 'original'] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];

export function isStrategyName(name: unknown): name is StrategyName {
  return typeof name === 'string' && (STRATEGY_NAMES as readonly string[]).includes(name);
}
