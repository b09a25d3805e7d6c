/**
 * A daemon's settings, declared once: each program's entry point lists its options in one table (name,
 * type, default, description), and this file drives from it the command-line parser (yargs), the TOML
 * config file (`--config FILE`) and `--print-config`. Adding a flag is one line in that table.
 *
 * Precedence: the command line, then the config file, then the defaults. yargs' own `.config()` is not
 * used: it reads JSON, says nothing about where a value came from, and lets unknown keys pass, while a
 * typo in a config file must stop the daemon with the key's name. So yargs parses the command line
 * without defaults or required flags (an option absent there stays undefined), and the merge, the
 * required check and the provenance happen here.
 *
 * Like protocol/program.ts, this is for the programs' entry points only: errors are usage errors (one
 * line on stderr, exit code 2) and --print-config prints and exits.
 */
import fs from 'node:fs';
import path from 'node:path';
import yargs from 'yargs';
import { parse as parseToml } from 'smol-toml';
import { packageVersion, usageError } from './program.js';

interface OptionBase {
  describe?: string;
  /** Must be set, on the command line or in the config file. */
  required?: boolean;
  /** What --help shows as the default where `default` does not say it (a default that depends on the terminal). */
  defaultDescription?: string;
  /** An action (`--print-id`), not a setting: refused in a config file and left out of --print-config. */
  commandLineOnly?: boolean;
}

export type OptionSpec =
  | (OptionBase & {
      type: 'string';
      default?: string;
      choices?: readonly string[];
      /** A comma-separated list (`A,B`); a config file may also give it as an array of strings. */
      list?: boolean;
    })
  | (OptionBase & { type: 'number'; default?: number })
  | (OptionBase & { type: 'boolean'; default?: boolean });

export type OptionTable = Readonly<Record<string, OptionSpec>>;

type ValueOf<S extends OptionSpec> = S extends { type: 'number' } ? number : S extends { type: 'boolean' } ? boolean : string;

/** The settings a table yields: an option with a default or a required one always has a value. */
export type Settings<T extends OptionTable> = {
  -readonly [K in keyof T]: T[K] extends { required: true } | { default: string | number | boolean } ? ValueOf<T[K]> : ValueOf<T[K]> | undefined;
};

export type Source = 'default' | 'config' | 'command line';

type Value = string | number | boolean;

/** The flags of the settings machinery itself: command line only. */
const META_OPTIONS = ['config', 'print-config', 'json'] as const;

/** What a config file holds: option name -> value, already checked against the table. */
interface ConfigFile {
  path: string;
  values: Map<string, Value>;
}

/** `null prototype` objects from smol-toml, arrays, dates: what a wrong value is, for the message. */
function describeValue(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  if (typeof v === 'object' && v !== null) return 'a table';
  if (typeof v === 'string') return `a string (${JSON.stringify(v)})`;
  if (typeof v === 'number' || typeof v === 'bigint') return `a number (${String(v)})`;
  return `a ${typeof v} (${String(v)})`;
}

const article = (type: string): string => (type === 'string' ? 'a string' : type === 'number' ? 'a number' : 'true or false');

/** The known option a mistyped key most likely meant (snake_case or camelCase of a kebab-case name). */
function suggestion(key: string, table: OptionTable): string {
  const plain = (s: string): string => s.toLowerCase().replace(/[-_]/g, '');
  const hit = Object.keys(table).find((name) => plain(name) === plain(key));
  return hit ? ` (did you mean '${hit}'?)` : '';
}

/** Reads and checks a config file: every key a known option, every value of its option's type. */
function readConfigFile(program: string, file: string, table: OptionTable): ConfigFile {
  const where = `config ${file}`;
  const fail = (message: string): never => usageError(program, `${where}: ${message}`);
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    const why: Record<string, string> = { ENOENT: 'no such file', EACCES: 'permission denied', EISDIR: 'it is a folder' };
    fail(`cannot read it: ${why[code] ?? code}`);
  }
  let doc: Record<string, unknown> = {};
  try {
    doc = parseToml(text);
  } catch (err) {
    const e = err as Error & { line?: number; column?: number };
    const reason = (e.message.split('\n')[0] ?? '').replace(/^Invalid TOML document:\s*/, '');
    fail(e.line !== undefined ? `TOML syntax error at line ${e.line}, column ${e.column ?? 0}: ${reason}` : `not valid TOML: ${reason}`);
  }
  const values = new Map<string, Value>();
  for (const [key, raw] of Object.entries(doc)) {
    if ((META_OPTIONS as readonly string[]).includes(key) || table[key]?.commandLineOnly) fail(`'${key}' can only be given on the command line`);
    const spec = table[key];
    if (!spec) fail(`unknown key '${key}'${suggestion(key, table)}`);
    const wrong = (): never => fail(`'${key}' must be ${spec!.type === 'string' && spec!.list ? 'a string or an array of strings' : article(spec!.type)}, not ${describeValue(raw)}`);
    let value: Value;
    switch (spec!.type) {
      case 'number':
        value = typeof raw === 'number' && Number.isFinite(raw) ? raw : wrong();
        break;
      case 'boolean':
        value = typeof raw === 'boolean' ? raw : wrong();
        break;
      case 'string':
        // A number is taken as its text, as yargs takes `--listen 7070` (so `max-upload-rate = 0` works).
        if (typeof raw === 'string') value = raw;
        else if (typeof raw === 'number' && Number.isFinite(raw)) value = String(raw);
        else if (spec!.list && Array.isArray(raw) && raw.every((x) => typeof x === 'string')) value = raw.join(',');
        else value = wrong();
        if (spec!.choices && !spec!.choices.includes(value)) fail(`'${key}' must be one of ${spec!.choices.join(', ')}, not ${JSON.stringify(value)}`);
        break;
    }
    values.set(key, value);
  }
  return { path: file, values };
}

/** One setting's value (undefined: not set) and where it came from. */
export interface Setting {
  value: Value | undefined;
  source: Source;
}

/** The --print-config --json document. */
export interface PrintedConfig {
  program: string;
  config: string | null;
  settings: Record<string, { value: Value | null; source: Source }>;
}

/** --print-config as text: a TOML document (usable as a config file), each line saying where its value came from. */
function formatSettingsText(program: string, config: string | null, settings: Map<string, Setting>): string {
  const lines = settings.size ? [...settings].map(([name, s]) => [s.value === undefined ? `# ${name} (not set)` : `${name} = ${JSON.stringify(s.value)}`, s.source === 'config' ? `config ${config}` : s.source]) : [];
  const width = Math.max(0, ...lines.map(([setting]) => setting!.length));
  return [`# ${program} settings${config ? ` (with --config ${config})` : ''}`, ...lines.map(([setting, source]) => `${setting!.padEnd(width)}  # ${source}`)].join('\n') + '\n';
}

/**
 * Parses `args` (the command line without node and the script) against `table`, merges the config file
 * named by `--config`, applies the defaults and checks the required options. A usage error exits with
 * code 2; --help, --version and --print-config print and exit 0.
 */
export function loadSettings<T extends OptionTable>(program: string, usage: string, table: T, args: string[]): Settings<T> {
  let parser = yargs(args).scriptName(program).usage(usage);
  for (const [name, spec] of Object.entries(table)) {
    const shownDefault = spec.defaultDescription ?? (spec.default === undefined ? undefined : String(spec.default));
    parser = parser.option(name, {
      type: spec.type,
      describe: `${spec.describe ?? ''}${spec.required ? ' (required)' : ''}`.trim(),
      ...(shownDefault !== undefined ? { defaultDescription: shownDefault } : {}),
      ...(spec.type === 'string' && spec.choices ? { choices: spec.choices } : {}),
    });
  }
  const argv = parser
    .option('config', { type: 'string', describe: 'read settings from this TOML file (keys are the flag names; the command line wins)' })
    .option('print-config', { type: 'boolean', describe: 'print the effective settings and where each came from, then exit' })
    .option('json', { type: 'boolean', describe: 'with --print-config: print a JSON object' })
    .group([...META_OPTIONS], 'Settings:')
    .strict()
    .version(packageVersion())
    .help()
    // yargs spreads some messages over lines ("Invalid values:\n  Argument: ..."); a usage error is one line.
    .fail((msg, err) => usageError(program, (msg ?? err?.message ?? 'bad arguments').replace(/:?\s*\n\s*/g, ': ')))
    .parseSync() as Record<string, unknown>;

  const configArg: unknown = Array.isArray(argv.config) ? argv.config[argv.config.length - 1] : argv.config;
  if (configArg !== undefined && (typeof configArg !== 'string' || configArg === '')) usageError(program, '--config needs a file name');
  const configPath = typeof configArg === 'string' ? path.resolve(configArg) : undefined;
  const file = configPath ? readConfigFile(program, configPath, table) : undefined;

  const settings = new Map<string, Setting>();
  const missing: string[] = [];
  for (const [name, spec] of Object.entries(table)) {
    const fromCommandLine = argv[name] as Value | Value[] | undefined;
    let setting: Setting;
    if (fromCommandLine !== undefined) {
      // A flag given twice is an array: the last one counts.
      const value = Array.isArray(fromCommandLine) ? fromCommandLine[fromCommandLine.length - 1] : fromCommandLine;
      if (typeof value === 'number' && Number.isNaN(value)) usageError(program, `--${name} must be a number`);
      setting = { value, source: 'command line' };
    } else if (file?.values.has(name)) setting = { value: file.values.get(name), source: 'config' };
    else setting = { value: spec.default, source: 'default' };
    if (setting.value === undefined && spec.required) missing.push(`--${name}`);
    settings.set(name, setting);
  }
  if (missing.length) usageError(program, `missing required ${missing.length > 1 ? 'flags' : 'flag'} ${missing.join(', ')} (on the command line or in a --config file)`);

  if (argv['print-config']) {
    const printed = new Map([...settings].filter(([name]) => !table[name]!.commandLineOnly));
    const config = configPath ?? null;
    if (argv.json) {
      const doc: PrintedConfig = { program, config, settings: Object.fromEntries([...printed].map(([name, s]) => [name, { value: s.value ?? null, source: s.source }])) };
      process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
    } else {
      process.stdout.write(formatSettingsText(program, config, printed));
    }
    process.exit(0);
  }
  if (argv.json) usageError(program, '--json goes with --print-config');

  return Object.fromEntries([...settings].map(([name, s]) => [name, s.value])) as Settings<T>;
}
