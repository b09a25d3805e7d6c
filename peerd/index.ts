/** The peer daemon's public entry points (what cli/ may import). */
export { ControlClient, type ControlCommands, type CommandName, type FileInfo, type SearchInfo, type StatusInfo, type GetArgs } from './control.js';
export type { DownloadResult, DownloadProgress, PeerShare } from './downloader.js';
export type { TransferRecord } from './db.js';
export { PeerDaemon, type PeerDaemonOptions } from './peerd.js';
