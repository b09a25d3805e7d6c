/**
 * protocol/README.md is the specification a second implementation is written from: every error code and
 * every message of the catalogue must be there, exactly as the code declares them. And the local faults
 * that have a code of their own get it, with a message naming what was wrong.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { CONTROL_COMMANDS, ErrorCodes, Messages, parseAddress, parseAddressList, parsePinnedAddress, parsePinnedAddressList, type MessageName, type Schema } from '../../protocol/index.js';
import { repoPath } from '../helpers/root.js';

const readme = readFileSync(repoPath('protocol/README.md'), 'utf8');

/** Rows of the markdown table whose header row starts with `| first |`, as arrays of trimmed cells. */
function tableAfter(first: string): string[][] {
  const lines = readme.split('\n');
  const start = lines.findIndex((l) => l.startsWith(`| ${first} |`));
  if (start < 0) return [];
  const rows: string[][] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(line.split('|').slice(1, -1).map((c) => c.trim()));
  }
  return rows;
}

t.test('every error code is in protocol/README.md', (t) => {
  for (const code of Object.keys(ErrorCodes)) t.ok(readme.includes(`\`${code}\``), `${code} is documented`);
  t.end();
});

t.test('the README error table lists every code once, and only real codes', (t) => {
  const listed = tableAfter('code | meaning').map((row) => row[0]!.replace(/`/g, ''));
  t.strictSame([...listed].sort(), Object.keys(ErrorCodes).sort(), 'the same codes as protocol/errors.ts');
  t.equal(new Set(listed).size, listed.length, 'no code twice');
  for (const row of tableAfter('code | meaning')) t.ok((row[1] ?? '').length > 10, `${row[0]} says what it means`);
  t.end();
});

function describe(schema: Schema): string {
  return Object.entries(schema)
    .map(([field, type]) => (typeof type === 'object' ? `\`${field}\`: list of ${type.max !== undefined ? `at most ${type.max} ` : ''}{ ${describe(type.list)} }` : `\`${field}\`: ${type}`))
    .join(', ');
}

t.test('the README catalogue matches protocol/messages.ts', (t) => {
  const rows = tableAfter('code | name');
  const byName = new Map(rows.map((row) => [row[1], row]));
  const names = Object.keys(Messages) as MessageName[];
  t.equal(rows.length, names.length, 'one row per message');
  for (const name of names) {
    const { code, kind, codec } = Messages[name];
    const row = byName.get(name);
    if (!row) {
      t.fail(`${name} is missing from the catalogue table`);
      continue;
    }
    t.equal(row[0], `0x${code.toString(16).padStart(2, '0')}`, `${name}: code`);
    t.equal(row[2], kind, `${name}: kind`);
    t.equal(row[3], describe(codec.schema as Schema) || '(empty)', `${name}: fields in wire order with their types`);
    t.ok((row[4] ?? '').length > 10, `${name}: says what it means`);
  }
  t.end();
});

t.test('an address that cannot be read is P2P_BAD_ADDRESS, naming the text', (t) => {
  const cases: Array<[string, () => unknown, RegExp]> = [
    ['no port', () => parseAddress('nowhere'), /'nowhere' is not HOST:PORT/],
    ['a bracketed host that is not IPv6', () => parseAddress('[10.0.0.1]:7070'), /'10\.0\.0\.1' is not an IPv6 address/],
    ['port 0 where one must connect', () => parseAddress('127.0.0.1:0'), /'127\.0\.0\.1:0' has no valid port/],
    ['a port above 65535', () => parseAddress('127.0.0.1:65536', true), /has no valid port \(1-65535\)/],
    ['an empty list', () => parseAddressList(' , '), /at least one HOST:PORT/],
    ['a pinned id that is not 40 hex characters', () => parsePinnedAddress('abc@127.0.0.1:7070'), /'abc' is not a key id/],
    ['a pinned address without a port', () => parsePinnedAddress(`${'a'.repeat(40)}@somewhere`), /'somewhere' is not HOST:PORT/],
    ['an empty pinned list', () => parsePinnedAddressList(''), /at least one HOST:PORT/],
  ];
  for (const [what, parse, message] of cases) t.throws(parse, { code: 'P2P_BAD_ADDRESS', message }, what);
  t.same(parsePinnedAddress(`${'A'.repeat(40)}@[::1]:7070`), { host: '::1', port: 7070, id: 'a'.repeat(40) }, 'a good one still parses');
  t.end();
});

t.test("a control command's arguments it cannot take stay P2P_BAD_REQUEST, naming the argument", (t) => {
  t.throws(() => CONTROL_COMMANDS.get({}), { code: 'P2P_BAD_REQUEST', message: 'missing key' });
  t.throws(() => CONTROL_COMMANDS.get({ key: 'a', maxPeers: 0 }), { code: 'P2P_BAD_REQUEST', message: /--max-peers/ });
  t.throws(() => CONTROL_COMMANDS.get({ key: 'a', strategy: 'greedy' }), { code: 'P2P_BAD_REQUEST', message: /unknown strategy 'greedy'/ });
  t.throws(() => CONTROL_COMMANDS.share({ paths: [] }), { code: 'P2P_BAD_REQUEST', message: /at least one path/ });
  t.throws(() => CONTROL_COMMANDS.search({ text: 5 }), { code: 'P2P_BAD_REQUEST', message: 'text must be a string' });
  t.end();
});
