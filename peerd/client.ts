/**
 * The public entry point for talking to a running peer daemon (the `p2p` command): the control client
 * and the shapes of its answers, without the daemon itself (SQLite, the download engine).
 */
export * from './control.js';
export type { DownloadResult } from './downloader.js';
