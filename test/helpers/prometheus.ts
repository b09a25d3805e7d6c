/**
 * Scraping a daemon's `--metrics` endpoint over real HTTP, and a strict parser of the Prometheus text
 * exposition format (0.0.4) written from its specification, independent of prom-client: every line must
 * be a HELP, a TYPE or a sample of a declared family, with a valid name, labels and value.
 */
import http from 'node:http';
import type { Address } from '../../protocol/index.js';

export interface Scrape {
  status: number;
  contentType: string;
  body: string;
}

/** GET http://address/path, on a fresh connection (closed afterwards). */
export function scrape(address: Address, path = '/metrics'): Promise<Scrape> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: address.host, port: address.port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"\s*(,|$)/y;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** Parses exposition text into families by name; throws on the first line that breaks the format. */
export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a line feed');
  const lines = text.slice(0, -1).split('\n');
  lines.forEach((line, i) => {
    const fail = (why: string): never => {
      throw new Error(`line ${i + 1}: ${why}: ${JSON.stringify(line)}`);
    };
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) return; // any other comment is allowed
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!NAME.test(name)) fail('bad metric name');
      const family = families.get(name) ?? { name, type: 'untyped', help: '', samples: [] };
      families.set(name, family);
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) fail('unknown type');
        if (family.samples.length > 0) fail('TYPE after samples');
        family.type = rest;
      } else family.help = rest;
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line);
    if (!m) return fail('not a sample');
    const [, name, labelText, valueText] = m as unknown as [string, string, string | undefined, string];
    const labels: Record<string, string> = {};
    if (labelText) {
      LABEL.lastIndex = 0;
      while (LABEL.lastIndex < labelText.length) {
        const at = LABEL.lastIndex;
        const l = LABEL.exec(labelText);
        if (!l || l.index !== at) fail('bad labels');
        const [, key, raw] = l as unknown as [string, string, string];
        if (key in labels) fail(`label ${key} twice`);
        labels[key] = raw.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
      }
    }
    // Prometheus reads NaN in any case (Go's ParseFloat), and prom-client writes 'Nan': its event-loop lag
    // gauges are NaN when a scrape comes before the loop delay monitor has a sample.
    const nan = /^nan$/i.test(valueText);
    const value = valueText === '+Inf' ? Infinity : valueText === '-Inf' ? -Infinity : nan ? NaN : Number(valueText);
    if (Number.isNaN(value) && !nan) fail('bad value');
    const family = families.get(name) ?? families.get(name.replace(/_(bucket|sum|count)$/, '')) ?? fail('a sample of an undeclared family');
    if (family.type === 'histogram' && family.name === name) fail('a histogram sample must be _bucket, _sum or _count');
    if ((family.type === 'counter' || family.type === 'gauge') && family.name !== name) fail(`a ${family.type} sample named after another family`);
    if (family.type === 'histogram' && name.endsWith('_bucket') && labels.le === undefined) fail('a bucket without le');
    family.samples.push({ name, labels, value });
  });
  return families;
}

/** The value of the one sample of `name` whose labels include `labels` (throws if none or several). */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const family = families.get(name) ?? families.get(name.replace(/_(bucket|sum|count)$/, ''));
  if (!family) throw new Error(`no metric ${name}`);
  const hits = family.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length !== 1) throw new Error(`${hits.length} samples of ${name} with ${JSON.stringify(labels)}`);
  return hits[0]!.value;
}
