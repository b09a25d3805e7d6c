/**
 * RaftNodes for tests that run a cluster on a virtual clock: each with its own in-memory state and
 * store, and one seeded random stream for all (the same schedule on every run).
 */
import { RaftNode, type RaftNodeOptions } from '../../daemon/raft/node.js';
import { TrackerState } from '../../daemon/state.js';
import { Store } from '../../daemon/store.js';

/** A linear congruential stream in [0, 1): the same numbers for the same seed. */
export function seededStream(seed: number): () => number {
  let x = seed;
  return () => (x = (x * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
}

/** A tracker's cluster logic with an in-memory store, starting at virtual time 0. */
export function memoryRaftNode(o: Omit<RaftNodeOptions, 'state' | 'now'>): RaftNode {
  return new RaftNode({ ...o, state: new TrackerState(new Store(':memory:')), now: 0 });
}
