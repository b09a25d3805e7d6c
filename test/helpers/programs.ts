/** The built programs (dist/, made by `npm test`'s pretest or `npm run build`), run as a user runs them. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const PROGRAMS = { 'p2p': 'dist/cli/main.js', 'p2p-tracker': 'dist/daemon/main.js', 'p2p-peerd': 'dist/peerd/main.js' } as const;
export type Program = keyof typeof PROGRAMS;

export interface ProgramResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion (killed after `timeoutMs`, which then shows as code null). */
export function runProgram(program: Program, args: string[], timeoutMs = 15_000): Promise<ProgramResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, PROGRAMS[program]), ...args], { cwd: ROOT, env: { ...process.env, P2P_SOCKET: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
