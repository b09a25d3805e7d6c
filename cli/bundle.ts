/**
 * `npm run build`'s last step: `p2p` as one CommonJS file, dist/cli/p2p.cjs (package.json's bin).
 *
 * Start-up is most of what a `p2p status` costs (issue 8). Run from the modules tsc writes, Node 20's
 * ES module loader resolves, reads and compiles some twenty files one by one, about 20 ms more than the
 * same code as one CommonJS file (`p2p status`: 147-150 ms against 126-129 ms, medians of 15 on this
 * machine, where `node -e 0` takes 104-110). dist/cli/main.js stays as tsc writes it and runs the same.
 *
 * The bundle holds the project's own modules and binary-parser. What only the rare paths load stays
 * outside, loaded when needed: cli/arguments.ts, the full parser for anything the fast path does not know,
 * as the ES module tsc writes (it imports yargs, which is an ES module only: a CommonJS require of it works
 * only from Node 20.19 on, a dynamic import on every Node 20), and from node_modules pino (daemon logs),
 * the ASN.1 modules (making a certificate) and the native SQLite binding.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const dist = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

await build({
  entryPoints: [path.join(dist, 'cli', 'main.js')],
  outfile: path.join(dist, 'cli', 'p2p.cjs'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['./arguments.js', 'yargs', 'yargs/*', 'pino', 'pino-pretty', '@peculiar/*', 'better-sqlite3'],
  // A CommonJS file has no import.meta: the modules that find package.json or load packages by URL get
  // the bundle's own. The directive comes first so the bundle stays in strict mode.
  banner: { js: "'use strict';\nconst importMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  define: { 'import.meta.url': 'importMetaUrl' },
  logLevel: 'warning',
});
