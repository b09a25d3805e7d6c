/**
 * Every error that crosses a layer carries a stable `code`. Codes travel on the wire inside ERROR frames,
 * so they are part of the protocol: never rename one; add new ones at the end of the table.
 */
export const ErrorCodes = {
  // framing and transport
  P2P_FRAME_TOO_LARGE: 'a frame declared a body larger than the limit',
  P2P_BAD_VERSION: 'a frame carried an unsupported protocol version',
  P2P_UNKNOWN_MESSAGE: 'a frame carried an unknown message type',
  P2P_MALFORMED: 'a message body disagreed with its declared lengths or types',
  P2P_UNEXPECTED_MESSAGE: 'a message arrived where the protocol does not allow it',
  P2P_TIMEOUT: 'a request got no answer in time',
  P2P_CONNECTION_CLOSED: 'the connection closed before the answer arrived',
  P2P_CONNECT_FAILED: 'could not connect',
  P2P_HANDSHAKE_TIMEOUT: 'the handshake did not complete in time',
  P2P_READ_TIMEOUT: 'a frame was started but not finished in time',
  P2P_IDLE_TIMEOUT: 'the connection was idle for too long',
  P2P_TOO_MANY_CONNECTIONS: 'too many connections, in total or from one address',
  P2P_TOO_MANY_REQUESTS: 'too many requests in flight on one connection',
  P2P_SHUTTING_DOWN: 'the server is shutting down',
  // identity and safety
  P2P_NOT_AUTHENTICATED: 'the operation needs a completed handshake',
  P2P_BAD_SIGNATURE: 'a signature did not verify',
  P2P_BLACKLISTED: 'the peer or its address is blacklisted',
  P2P_UNAUTHORIZED: 'the admin token is missing or wrong',
  P2P_RATE_LIMITED: 'too many requests of this kind; try again later',
  P2P_BAD_EVIDENCE: 'a report carried receipts that do not prove it',
  // application
  P2P_NOT_FOUND: 'no such file, chunk or entry',
  P2P_BAD_REQUEST: 'the request is invalid',
  P2P_BAD_NAME: 'a file name is too long or contains forbidden characters',
  P2P_TOO_MANY_FILES: 'too many files in one registration',
  P2P_CHUNK_UNAVAILABLE: 'the serving peer cannot serve that chunk right now',
  P2P_CORRUPT_DATA: 'data failed verification',
  P2P_NOT_PRIMARY: 'this tracker is not the acting main',
  P2P_STALE_TERM: 'a message carried an older term than the receiver knows',
  P2P_REPLICATION_FAILED: 'a write could not be replicated to the backups',
  P2P_EXISTS: 'the target already exists',
  P2P_INTERNAL: 'an internal error',
  P2P_KEY_MISMATCH: 'the other side proved a key other than the one pinned or learned for it',
  P2P_UNSAFE_FILE: 'a local file to write is not a regular file of this user (a planted symbolic link, say)',
  P2P_SEND_TIMEOUT: 'the other side did not read what was sent to it in time',
  P2P_TOO_MANY_RECEIPTS: 'a report carried more receipts than evidence needs',
  P2P_REGISTRATION_QUOTA: "a registration would take a peer's files or name bytes past its cap",
  P2P_TLS_REQUIRED: 'the server takes this connection only inside TLS 1.3',
  P2P_VERSION: 'the other side, or a data folder, is from a release this one cannot work with',
  P2P_AMBIGUOUS: 'a name or an id prefix matches several files; name one by its id',
  P2P_BAD_PATH: 'a local path is not what the command needs (a missing folder, a folder for a file, a file that is not regular or readable, an empty token file, a socket path too long)',
  P2P_BAD_ADDRESS: 'an address is not HOST:PORT, [IPv6]:PORT or ID@HOST:PORT, or its port or key id is not valid',
  P2P_IN_PROGRESS: 'that file is already being downloaded here, to another path; wait for that download to finish',
  P2P_OVERLOADED: 'the server is overloaded: the request waited too long for its turn and was not run; try again',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export function isErrorCode(code: string): code is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ErrorCodes, code);
}

/** Base of every error this project raises on purpose. */
export class P2PError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ErrorCodes[code], options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Bad bytes from the network: the connection that sent them is closed. */
export class ProtocolError extends P2PError {}
export class FrameTooLargeError extends ProtocolError {
  constructor(declared: number, max: number) {
    super('P2P_FRAME_TOO_LARGE', `frame body of ${declared} bytes exceeds the limit of ${max}`);
  }
}
export class BadVersionError extends ProtocolError {
  constructor(version: number) {
    super('P2P_BAD_VERSION', `unsupported protocol version ${version}`);
  }
}
/** A frame of a p2pshare protocol version this release does not speak: the other side is too old or too new. */
export class VersionError extends ProtocolError {
  constructor(version: number, ours: { min: number; max: number }) {
    const range = ours.min === ours.max ? `version ${ours.min}` : `versions ${ours.min} to ${ours.max}`;
    super('P2P_VERSION', `p2pshare protocol version ${version} is not spoken here (this release speaks ${range}): upgrade the older of the two`);
  }
}
export class UnknownMessageError extends ProtocolError {
  constructor(type: number) {
    super('P2P_UNKNOWN_MESSAGE', `unknown message type ${type}`);
  }
}
export class MalformedMessageError extends ProtocolError {
  constructor(what: string, cause?: unknown) {
    super('P2P_MALFORMED', `malformed ${what}`, { cause });
  }
}

/** An ERROR frame the other side sent in answer to one of our requests. */
export class RemoteError extends P2PError {
  constructor(code: ErrorCode, message: string) {
    super(code, message);
  }
}

export class TimeoutError extends P2PError {
  constructor(what: string, ms: number) {
    super('P2P_TIMEOUT', `${what} got no answer in ${ms} ms`);
  }
}

export class ConnectionClosedError extends P2PError {
  constructor(message = 'connection closed') {
    super('P2P_CONNECTION_CLOSED', message);
  }
}

/** Turns anything thrown into a P2PError, keeping our own as they are. */
export function toP2PError(err: unknown): P2PError {
  if (err instanceof P2PError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  if (e && typeof e.code === 'string' && ['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOENT', 'ECONNRESET', 'EPIPE'].includes(e.code)) {
    return new P2PError('P2P_CONNECT_FAILED', e.message, { cause: err });
  }
  return new P2PError('P2P_INTERNAL', e?.message ?? String(err), { cause: err });
}
