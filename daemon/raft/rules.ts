/**
 * The election and commit rules, as pure functions. They follow the Raft paper (Ongaro & Ousterhout,
 * "In Search of an Understandable Consensus Algorithm", sections 5.2-5.4), with three additions that are
 * this cluster's own: terms partitioned by rank, and the two-tracker mode.
 */
import type { LogPosition } from './log.js';

/** Votes (or copies) needed: a majority of the cluster. With two trackers see `canActAlone`. */
export function majority(size: number): number {
  return Math.floor(size / 2) + 1;
}

/**
 * The term a tracker of rank `rank` runs in next: the smallest term above `current` that is its own
 * (term mod size = rank). Two trackers can then never be main in the same term, even two trackers that
 * each take over alone while split apart.
 */
export function nextTerm(current: number, rank: number, size: number): number {
  const base = current + 1;
  return base + ((rank - (base % size) + size) % size);
}

/** Raft's "at least as up to date": the later last term wins, then the longer log. */
export function atLeastAsUpToDate(candidate: LogPosition, voter: LogPosition): boolean {
  return candidate.term > voter.term || (candidate.term === voter.term && candidate.index >= voter.index);
}

export interface VoterView {
  /** The voter's own term and last log position. */
  term: number;
  last: LogPosition;
  votedFor: number | undefined;
  /** The voter heard from an acting main within failover-ms (or is the main). */
  mainAlive: boolean;
}

export interface VoteAsk {
  candidate: number;
  term: number;
  last: LogPosition;
  /** A pre-vote (asks whether a vote would be granted; changes nothing). */
  pre: boolean;
  /** The acting main handed command over (the voter's own main asked for this election). */
  transfer: boolean;
}

/** A vote refused because the voter still hears a main (a pre-vote refused so may be asked again soon). */
export const MAIN_IS_ACTING = 'a main is acting';

/** Why a vote is refused, or undefined when it is granted. */
export function refuseVote(v: VoterView, ask: VoteAsk): string | undefined {
  if (ask.term < v.term || (!ask.pre && ask.term === v.term && v.votedFor !== undefined && v.votedFor !== ask.candidate)) {
    return `already in term ${v.term}${v.votedFor !== undefined ? ` and voted for rank ${v.votedFor}` : ''}`;
  }
  if (ask.pre && ask.term <= v.term) return `already in term ${v.term}`;
  if (v.mainAlive && !ask.transfer) return MAIN_IS_ACTING;
  if (!atLeastAsUpToDate(ask.last, v.last)) return `its log (${fmt(ask.last)}) is behind this tracker's (${fmt(v.last)})`;
  return undefined;
}

/**
 * With two trackers a majority is both, which would stop every write when either one dies. So a tracker
 * acts alone (takes over, or commits a write) when the other has been silent for failover-ms: the
 * documented trade-off (see the README). With three or more, never.
 */
export function canActAlone(size: number, othersHeard: number): boolean {
  return size === 1 || (size === 2 && othersHeard === 0);
}

/**
 * The highest index a main may commit: stored on a majority (counting itself), and written in its own
 * term (an entry of an older term is committed only by a later one of the current term, Raft 5.4.2).
 */
export function commitIndex(current: number, ownLast: number, matches: number[], size: number, termAt: (i: number) => number | undefined, term: number, alone: boolean): number {
  if (alone) return termAt(ownLast) === term ? Math.max(current, ownLast) : current;
  const sorted = [ownLast, ...matches].sort((a, b) => b - a);
  const candidate = sorted[majority(size) - 1] ?? 0;
  return candidate > current && termAt(candidate) === term ? candidate : current;
}

function fmt(p: LogPosition): string {
  return `term ${p.term}, index ${p.index}`;
}
