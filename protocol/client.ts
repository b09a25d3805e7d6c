/**
 * The public entry point for clients that only talk (the `p2p` command): connections, frames and
 * errors, without identities, manifests and their dependencies, so a command starts quickly.
 * Everything here is also exported by protocol/index.ts.
 */
export * from './connection.js';
export * from './errors.js';
export * from './messages.js';
export * from './control.js';
export * from './name-order.js';
