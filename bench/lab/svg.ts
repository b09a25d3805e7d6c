/**
 * Hand-written SVG charts for the lab's results (no dependencies): line panels (a value against N, one
 * line per strategy, individual runs as dots) and grouped bar panels, stacked into one image, with
 * dashed reference lines for the targets.
 */

/** One colour per engine strategy and per comparator (aria2c), and for the reference lines. */
export const COLORS = { adaptive: '#1f77b4', original: '#ff7f0e', aria2c: '#8c564b', ideal: '#2ca02c', target: '#d62728', extra: '#9467bd', grey: '#7f7f7f' } as const;

export interface RefLine {
  y: number;
  label: string;
  color?: string;
}

export interface LineSeries {
  name: string;
  color: string;
  /** The line (medians). */
  points: Array<{ x: number; y: number }>;
  /** Individual runs, drawn as small dots. */
  dots?: Array<{ x: number; y: number }>;
  dashed?: boolean;
}

export interface LinePanel {
  kind: 'line';
  title: string;
  xLabel: string;
  yLabel: string;
  series: LineSeries[];
  refLines?: RefLine[];
  yMin?: number;
  yMax?: number;
}

export interface BarGroup {
  name: string;
  color: string;
  values: Array<number | undefined>;
}

export interface BarPanel {
  kind: 'bar';
  title: string;
  yLabel: string;
  categories: string[];
  groups: BarGroup[];
  refLines?: RefLine[];
  yMax?: number;
  /** How to print a bar's value above it. */
  format?: (v: number) => string;
}

export type Panel = LinePanel | BarPanel;

const WIDTH = 820;
const PANEL_HEIGHT = 330;
const M = { left: 70, right: 190, top: 40, bottom: 50 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** About five gridlines at round values (steps of 1, 2, 2.5 or 5 times a power of ten). */
function ticks(min: number, max: number): number[] {
  const raw = (max - min) / 5;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) out.push(Math.round(v / step) * step);
  return out;
}

function fmt(v: number): string {
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1).replace(/\.0$/, '');
  return v.toFixed(2).replace(/0$/, '').replace(/\.0$/, '');
}

function frame(out: string[], top: number, title: string, yLabel: string, xLabel: string, yMin: number, yMax: number, y: (v: number) => number): void {
  const plotW = WIDTH - M.left - M.right;
  const plotH = PANEL_HEIGHT - M.top - M.bottom;
  out.push(`<text x="${M.left}" y="${top + 22}" font-size="15" font-weight="bold">${esc(title)}</text>`);
  for (const t of ticks(yMin, yMax)) {
    out.push(`<line x1="${M.left}" x2="${M.left + plotW}" y1="${y(t)}" y2="${y(t)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${M.left - 6}" y="${y(t) + 4}" font-size="11" text-anchor="end">${fmt(t)}</text>`);
  }
  out.push(`<rect x="${M.left}" y="${top + M.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`);
  const cy = top + M.top + plotH / 2;
  out.push(`<text x="18" y="${cy}" font-size="12" text-anchor="middle" transform="rotate(-90 18 ${cy})">${esc(yLabel)}</text>`);
  if (xLabel) out.push(`<text x="${M.left + plotW / 2}" y="${top + PANEL_HEIGHT - 10}" font-size="12" text-anchor="middle">${esc(xLabel)}</text>`);
}

function legend(out: string[], top: number, items: Array<{ name: string; color: string; dashed?: boolean | undefined }>): void {
  const x = WIDTH - M.right + 14;
  items.forEach((it, i) => {
    const yy = top + M.top + 10 + i * 20;
    out.push(`<line x1="${x}" x2="${x + 22}" y1="${yy}" y2="${yy}" stroke="${it.color}" stroke-width="3"${it.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    out.push(`<text x="${x + 28}" y="${yy + 4}" font-size="11">${esc(it.name)}</text>`);
  });
}

function refLines(out: string[], lines: RefLine[] | undefined, y: (v: number) => number, yMin: number, yMax: number): Array<{ name: string; color: string; dashed: boolean }> {
  const plotW = WIDTH - M.left - M.right;
  const items: Array<{ name: string; color: string; dashed: boolean }> = [];
  for (const r of lines ?? []) {
    if (r.y < yMin || r.y > yMax) continue;
    const color = r.color ?? COLORS.target;
    out.push(`<line x1="${M.left}" x2="${M.left + plotW}" y1="${y(r.y)}" y2="${y(r.y)}" stroke="${color}" stroke-width="1.5" stroke-dasharray="6 4"/>`);
    items.push({ name: r.label, color, dashed: true });
  }
  return items;
}

function linePanel(out: string[], top: number, p: LinePanel): void {
  const plotW = WIDTH - M.left - M.right;
  const plotH = PANEL_HEIGHT - M.top - M.bottom;
  const all = p.series.flatMap((s) => [...s.points, ...(s.dots ?? [])]);
  const xs = all.map((pt) => pt.x);
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs, xMin + 1);
  const yMin = p.yMin ?? 0;
  const yMax = p.yMax ?? niceMax(Math.max(...all.map((pt) => pt.y), ...(p.refLines ?? []).map((r) => r.y)) * 1.05);
  const x = (v: number): number => M.left + ((v - xMin) / (xMax - xMin)) * plotW;
  const y = (v: number): number => top + M.top + plotH - ((Math.min(Math.max(v, yMin), yMax) - yMin) / (yMax - yMin)) * plotH;
  frame(out, top, p.title, p.yLabel, p.xLabel, yMin, yMax, y);
  const distinct = [...new Set(xs)].sort((a, b) => a - b);
  const step = distinct.length > 12 ? Math.ceil(distinct.length / 10) : 1;
  distinct.forEach((v, i) => {
    if (i % step === 0 || i === distinct.length - 1) out.push(`<text x="${x(v)}" y="${top + M.top + plotH + 16}" font-size="11" text-anchor="middle">${fmt(v)}</text>`);
  });
  const refs = refLines(out, p.refLines, y, yMin, yMax);
  for (const s of p.series) {
    for (const d of s.dots ?? []) out.push(`<circle cx="${x(d.x).toFixed(1)}" cy="${y(d.y).toFixed(1)}" r="2.2" fill="${s.color}" fill-opacity="0.45"/>`);
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    if (pts.length > 1) out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2.5"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${pts.map((pt) => `${x(pt.x).toFixed(1)},${y(pt.y).toFixed(1)}`).join(' ')}"/>`);
    for (const pt of pts) out.push(`<circle cx="${x(pt.x).toFixed(1)}" cy="${y(pt.y).toFixed(1)}" r="3.5" fill="${s.color}"/>`);
  }
  legend(out, top, [...p.series.map((s) => ({ name: s.name, color: s.color, dashed: s.dashed })), ...refs]);
}

function barPanel(out: string[], top: number, p: BarPanel): void {
  const plotW = WIDTH - M.left - M.right;
  const plotH = PANEL_HEIGHT - M.top - M.bottom;
  const values = p.groups.flatMap((g) => g.values.filter((v): v is number => v !== undefined && Number.isFinite(v)));
  const yMax = p.yMax ?? niceMax(Math.max(...values, ...(p.refLines ?? []).map((r) => r.y)) * 1.1);
  const y = (v: number): number => top + M.top + plotH - (Math.min(Math.max(v, 0), yMax) / yMax) * plotH;
  frame(out, top, p.title, p.yLabel, '', 0, yMax, y);
  const slot = plotW / Math.max(1, p.categories.length);
  const barW = Math.min(40, (slot * 0.8) / Math.max(1, p.groups.length));
  const format = p.format ?? fmt;
  p.categories.forEach((c, ci) => {
    const cx = M.left + slot * (ci + 0.5);
    const left = cx - (barW * p.groups.length) / 2;
    p.groups.forEach((g, gi) => {
      const v = g.values[ci];
      if (v === undefined || !Number.isFinite(v)) return; // not measured for this row (a comparator has no steady state)
      const bx = left + gi * barW;
      out.push(`<rect x="${bx.toFixed(1)}" y="${y(v).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(y(0) - y(v)).toFixed(1)}" fill="${g.color}"/>`);
      if (p.categories.length * p.groups.length <= 24) out.push(`<text x="${(bx + barW / 2 - 1).toFixed(1)}" y="${(y(v) - 4).toFixed(1)}" font-size="10" text-anchor="middle">${esc(format(v))}</text>`);
    });
    // A category name may hold line breaks: one line each.
    const lines = c.split('\n');
    out.push(`<text x="${cx.toFixed(1)}" y="${top + M.top + plotH + 16}" font-size="11" text-anchor="middle">${lines.map((l, i) => `<tspan x="${cx.toFixed(1)}" dy="${i === 0 ? 0 : 13}">${esc(l)}</tspan>`).join('')}</text>`);
  });
  const refs = refLines(out, p.refLines, y, 0, yMax);
  legend(out, top, [...p.groups.map((g) => ({ name: g.name, color: g.color })), ...refs]);
}

/** One SVG document: a title line and the panels stacked. */
export function renderChart(title: string, subtitle: string, panels: Panel[]): string {
  const head = 48;
  const height = head + panels.length * PANEL_HEIGHT;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="12" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="12" y="40" font-size="11" fill="#555">${esc(subtitle)}</text>`,
  ];
  panels.forEach((p, i) => {
    const top = head + i * PANEL_HEIGHT;
    if (p.kind === 'line') linePanel(out, top, p);
    else barPanel(out, top, p);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
