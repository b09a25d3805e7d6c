/**
 * The control API between `p2p` and its peer daemon: CONTROL requests carrying a command name and JSON
 * arguments over the daemon's Unix socket, answered by CONTROL_RESULT (JSON), with CONTROL_EVENT progress
 * under the same request id. This file holds the shapes both sides agree on and the client the CLI uses.
 */
import { dial, P2PError, toP2PError, type CommandName, type Connection, type ControlArgs, type GetArgs } from '../protocol/client.js';

export type { CommandName, GetArgs };

export interface FileInfo {
  name: string;
  id: string;
  size: number;
  path: string;
}

export interface SearchInfo {
  name: string;
  id: string;
  size: number;
  peers: number;
}

export interface StatusInfo {
  peerId: string;
  listen: string;
  advertise: string;
  /** The session in use, and the standby session (peerd/tracker-client.ts; null while there is none). */
  tracker: { address: string | null; role: string; state: string; term: number; standby: string | null };
  trackers: string[];
  shared: number;
  transfers: Array<{ name: string; id: string; bytes: number; total: number; peers: number; rateBytesPerSec: number }>;
  uploads: number;
  bytesSent: number;
  rates: { uploadBytesPerSec: number; downloadBytesPerSec: number };
  limits: { maxUploadRate: number; maxDownloadRate: number; maxUploads: number };
  version: string;
}

/** What each command of the catalogue (protocol/control.ts) answers. */
export interface ControlResults {
  status: StatusInfo;
  files: FileInfo[];
  share: FileInfo[];
  unshare: FileInfo[];
  search: SearchInfo[];
  /** `truncated`: more files matched than the limit (the hits are the first the tracker found, by name). */
  searchResult: { hits: SearchInfo[]; truncated: boolean };
  /** `alreadyPresent`: the target already was this very file (same id), so nothing was downloaded. */
  get: import('./downloader.js').DownloadResult & { alreadyPresent?: true };
  /** `sameFile`: the existing target already is this very file (same id). */
  resolve: { name: string; id: string; size: number; target: string; exists: boolean; sameFile: boolean };
  transfers: import('./db.js').TransferRecord[];
  report: { blacklisted: string[]; pending: string[]; fileId: string };
}

export type ControlCommands = { [C in CommandName]: { args: ControlArgs<C>; result: ControlResults[C] } };

/** The CLI's side: one connection to the daemon's socket. */
export class ControlClient {
  private constructor(private readonly conn: Connection) {}

  /**
   * Connects and checks that the daemon answers (a stopped daemon's socket still accepts connections):
   * a dead, missing or hung daemon fails within `timeoutMs`.
   */
  static async connect(socketPath: string, timeoutMs = 1000): Promise<ControlClient> {
    let conn: Connection | undefined;
    try {
      conn = await dial({ path: socketPath }, { connectTimeoutMs: timeoutMs, requestTimeoutMs: 0 });
      await conn.request('PING', {}, 'PONG', { timeoutMs });
      return new ControlClient(conn);
    } catch (err) {
      conn?.destroy();
      if (toP2PError(err).code === 'P2P_TIMEOUT') {
        throw new P2PError('P2P_CONNECT_FAILED', `the p2p-peerd on ${socketPath} accepted the connection but did not answer in ${timeoutMs} ms (stopped or overloaded?); restart it with: p2p-peerd --trackers HOST:PORT --share DIR --data DIR`);
      }
      throw new P2PError('P2P_CONNECT_FAILED', `no p2p-peerd answers on ${socketPath} (${toP2PError(err).message.replace(/^.*: /, '')}); start one with: p2p-peerd --trackers HOST:PORT --share DIR --data DIR`);
    }
  }

  async call<C extends CommandName>(
    command: C,
    args: ControlCommands[C]['args'],
    onEvent?: (event: Record<string, unknown>) => void,
    timeoutMs = command === 'get' ? 0 : 30_000,
  ): Promise<ControlCommands[C]['result']> {
    const res = await this.conn.request('CONTROL', { command, args: JSON.stringify(args) }, 'CONTROL_RESULT', {
      timeoutMs,
      onEvent: (name, body) => {
        if (name === 'CONTROL_EVENT' && onEvent) onEvent(JSON.parse((body as { event: string }).event) as Record<string, unknown>);
      },
    });
    return JSON.parse(res.result) as ControlCommands[C]['result'];
  }

  close(): void {
    this.conn.close();
  }
}
