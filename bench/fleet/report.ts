/**
 * What the fleet benchmark found, as data (the JSON), as markdown tables (a row per fleet size) and as an
 * SVG chart (bench/lab/svg.ts's panels, one bar group per fleet size).
 */
import { mdTable } from '../lab/report.js';
import { COLORS, renderChart, type BarPanel } from '../lab/svg.js';
import type { machineInfo } from '../harness.js';

export interface LatencyFigures {
  answered: number;
  failed: number;
  notFound: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  /** Lookups: holders per answer; searches: hits per answer. */
  meanCount: number;
}

export interface TrackerMemory {
  tracker: string;
  role: 'main' | 'backup';
  /** RSS before any peer connected, with every session up and no files, and after every registration. */
  emptyBytes: number;
  sessionsBytes: number;
  registeredBytes: number;
  /** (registered - sessions) / holder entries. */
  bytesPerHolder: number;
  /** registered / holder entries. */
  totalBytesPerHolder: number;
  /** CPU (user + system) of this tracker during the registration phase, per peer registered. */
  registerCpuMsPerPeer: number;
  /** After every registration, from the tracker's own metrics: JS heap in use and held, memory outside it (absent in older results). */
  heapUsedBytes?: number;
  heapTotalBytes?: number;
  externalBytes?: number;
  /** The same with every session up and no files. */
  sessionsHeapUsedBytes?: number;
  sessionsHeapTotalBytes?: number;
  sessionsExternalBytes?: number;
}

export interface Transition {
  /** The tracker that became main and stayed (undefined: none within the timeout). */
  newMain: string | undefined;
  /** The first tracker the probes saw answer a LOOKUP as main, and when (it may have lost command again at once). */
  firstMain: string | undefined;
  firstLookupMs: number;
  /**
   * From the kill (or restart): until some peer had a LOOKUP, sent after it, answered (by the new main or a
   * backup, on a session it already had or made at once). The probe's figure includes its fresh
   * connection's wait behind every reconnecting peer's handshake; this one is what the first peers saw.
   */
  peersFirstLookupMs: number;
  /** Spells as main (of any candidate, the same one again too) the probes saw begin after the first. */
  mainChanges: number;
  /** From the kill (or restart): until the main that stayed answered a probe's HELLO as main, and a LOOKUP. */
  mainMs: number;
  lookupMs: number;
  /** Until every peer had a session with the new main, and had a REGISTER acknowledged by it (NaN: not all did). */
  sessionsMs: number;
  /**
   * Until every peer had a session with the main that stayed and it listed every file they share (what a
   * downloader needs), whether or not each peer's own REGISTER was answered yet (NaN: never in the window).
   */
  listedMs: number;
  registeredMs: number;
  peersBack: number;
  peers: number;
  /** Peers that did not re-register within the timeout, by the tracker of their latest session ('none': no session), and a few of their numbers. */
  stragglers: { byTracker: Record<string, number>; examples: number[] };
  /** At the end of the window, every peer's session by `TRACKER ROLE STATE` (TrackerClient's current, role, state). */
  whereabouts: Record<string, number>;
  /** Holder entries the main lists at the end of the window, and what the peers in the fleet share. */
  holderEntries: number;
  expectedHolderEntries: number;
  /** Lookups answered during the window (from the kill or restart until every peer re-registered). */
  lookups: LatencyFigures;
  /** Requests (lookups and searches) that failed during the window, by error code. */
  errors: Record<string, number>;
  cpuPercent: { trackers: Array<number | undefined>; generator: number };
  windowMs: number;
  /** The window ended because no peer had re-registered for a while (not at the timeout). */
  stalled: boolean;
}

export interface SizeResult {
  peers: number;
  filesPerPeer: number;
  holderEntries: number;
  workersReadyS: number;
  connect: { seconds: number; perSecond: number; cpuPercent: { trackers: Array<number | undefined>; generator: number }; mainPeerSessions: number };
  register: { seconds: number; perSecond: number; filesPerSecond: number; failures: number; registered: number };
  memory: TrackerMemory[];
  steady: {
    seconds: number;
    lookups: LatencyFigures;
    searches: LatencyFigures;
    heartbeatsPerSecond: number;
    mainHeartbeatsPerSecond: number;
    heartbeatsMissed: number;
    sessionsLost: number;
    skipped: number;
    errors: Record<string, number>;
    generatorLoopDelayP99Ms: number;
    /** The workers' RSS together at the end of the steady load. */
    generatorRssBytes: number;
    cpuPercent: { trackers: Array<number | undefined>; generator: number };
    maxBackupLagEntries: number;
    commitP99Ms: number;
    serverLookupP99Ms: number;
    serverSearchP99Ms: number;
    /** The main's p99 of the wait for a turn (its request gate), lookups and searches; absent in older results. */
    serverLookupWaitP99Ms?: number;
    serverSearchWaitP99Ms?: number;
    churnPerSecond: number;
    left: number;
    joined: number;
  };
  /** Absent with --no-failover. */
  takeover?: Transition;
  takeback?: Transition;
  /**
   * PINGs each tracker answered per second over 10 s once the load had stopped after the takeback (the
   * sessions in use and the standbys' heartbeats only); absent in older results and with --no-failover.
   */
  heartbeatsAtRest?: Array<number | undefined>;
  statesIdentical: boolean;
}

export interface FleetReport {
  benchmark: 'fleet';
  command: string;
  settings: Record<string, unknown>;
  machine: ReturnType<typeof machineInfo>;
  code: string;
  totalSeconds: number;
  sizes: SizeResult[];
}

const MB = 1e6;

function num(v: number | undefined, digits = 0): string {
  if (v === undefined || !Number.isFinite(v)) return '-';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ms(v: number): string {
  if (!Number.isFinite(v)) return '-';
  return v >= 100 ? num(v) : num(v, 1);
}

function lat(l: LatencyFigures): string {
  return `${ms(l.p50Ms)} / ${ms(l.p99Ms)} / ${ms(l.p999Ms)} / ${ms(l.maxMs)}`;
}

function mb(bytes: number): string {
  return num(bytes / MB);
}

function cpu(c: { trackers: Array<number | undefined>; generator: number }): string {
  return `${c.trackers.map((t) => num(t)).join(' / ')} / ${num(c.generator)}`;
}

function transitionHeaders(trackers: string, main: string): string[] {
  return [
    'peers',
    main,
    'first LOOKUP answered by a main, ms',
    'later spells as main',
    'main (that stayed) after ms',
    'its first LOOKUP ms',
    "a peer's first LOOKUP answered, ms",
    'every peer has a session with it, ms',
    'and it lists all their files, ms',
    'every peer re-registered with it, ms',
    'holder entries it lists then (of those shared)',
    'lookup p99 / max ms meanwhile',
    `CPU % ${trackers} / generator meanwhile`,
  ];
}

function transitionRow(s: SizeResult, t: Transition): Array<string | number> {
  const failed = t.lookups.failed ? `, ${num(t.lookups.failed)} failed` : '';
  return [
    num(s.peers),
    t.newMain ?? 'none',
    t.firstMain ? `${ms(t.firstLookupMs)}${t.firstMain !== t.newMain ? ` (${t.firstMain})` : ''}` : '-',
    num(t.mainChanges),
    ms(t.mainMs),
    ms(t.lookupMs),
    ms(t.peersFirstLookupMs ?? NaN),
    ms(t.sessionsMs),
    ms(t.listedMs),
    Number.isFinite(t.registeredMs) ? ms(t.registeredMs) : `${num(t.peersBack)} of ${num(t.peers)} by ${ms(t.windowMs)}${t.stalled ? ' (no more came)' : ''}`,
    `${num(t.holderEntries)} (${num(t.expectedHolderEntries)})`,
    `${ms(t.lookups.p99Ms)} / ${ms(t.lookups.maxMs)}${failed}`,
    cpu(t.cpuPercent),
  ];
}

export function markdown(r: FleetReport): string {
  const st = r.settings;
  const m = r.machine;
  const trackers = r.sizes[0]?.memory.map((x) => x.tracker.replace(/^p\d+-/, '')).join(' / ') ?? 't0 / t1 / t2';
  const notes: string[] = [];
  const failover = r.sizes.filter((s) => s.takeover && s.takeback);
  for (const s of r.sizes) {
    if (s.register.failures > 0) notes.push(`${num(s.peers)} peers: ${s.register.failures} peers could not register (three attempts each).`);
    if (s.steady.skipped > 0) notes.push(`${num(s.peers)} peers: ${num(s.steady.skipped)} requests were not sent during the steady load: 10,000 were waiting for an answer in their worker.`);
    const errors = Object.entries(s.steady.errors);
    if (errors.length) notes.push(`${num(s.peers)} peers: failed requests during the steady load: ${errors.map(([k, v]) => `${k} ${v}`).join(', ')}.`);
    for (const [what, t] of [['takeover', s.takeover], ['takeback', s.takeback]] as const) {
      if (!t || t.peersBack >= t.peers) continue;
      const where = Object.entries(t.whereabouts).map(([k, n]) => `${n} ${k}`).join(', ');
      const last = Object.entries(t.stragglers.byTracker).map(([k, n]) => `${n} on ${k}`).join(', ');
      notes.push(
        `${num(s.peers)} peers, ${what}: ${num(t.peers - t.peersBack)} peers had not re-registered with ${t.newMain ?? 'a main'} after ${ms(t.windowMs)} ms ` +
          `(their latest session: ${last || 'none'}; e.g. peers ${t.stragglers.examples.join(', ')}). Every peer's session then (tracker, role it believes, state): ${where}.`,
      );
    }
    if (!s.statesIdentical) notes.push(`${num(s.peers)} peers: the trackers' state hashes still differed 60 s after the load stopped.`);
  }
  return [
    '# Fleet benchmark: what one tracker cluster holds',
    '',
    `Command: \`${r.command}\``,
    '',
    `Three \`p2p-tracker\` processes (one cluster, \`--metrics\` on each, tracker defaults otherwise${st.heartbeatMs || st.failoverMs || st.leaseMs ? `; --heartbeat-ms ${st.heartbeatMs ?? 'default'}, --failover-ms ${st.failoverMs ?? 'default'}, --lease-ms ${st.leaseMs ?? 'default'}` : ''}) and`,
    `${st.workers} worker processes of simulated peers${st.workerNice ? ` (at nice ${st.workerNice}: the trackers take the CPU first, as if the peers ran on machines of their own)` : ''}, connecting from 127.0.0.2-254 in turn. Each peer is the product's own tracker session (peerd's`,
    `TrackerClient${st.blacklistCache ? ', with the BlacklistCache a peer daemon keeps' : ", and the BLACKLIST_SYNC a peer daemon's BlacklistCache sends on each session"}) with an identity of its own; it shares`,
    `${st.files} files, ${Number(st.popularShare) * 100}% of them drawn from a pool of ${st.popularPool} files many peers hold. Steady load: ${st.lookupRate} lookups/s`,
    `(a random file of a random peer) and ${st.searchRate} searches/s (limit ${st.searchLimit}: a word, two words, or a file's exact name), open loop`,
    `and spread over the fleet, for ${st.steadyS} s, with churn (${typeof st.churnRate === 'number' ? `${st.churnRate} peers/s` : st.churnRate} leave and as many join),`,
    `plus the heartbeats every peer sends by itself.${st.failover ? ' Then kill -9 of the main under the same load (takeover), and its restart on its own --data (takeback).' : ' No takeover (--no-failover).'}`,
    'Latencies are measured by the peer that asked, from the call to the answer (p50 / p99 / p99.9 / max).',
    '',
    '## Sessions, registration and memory',
    '',
    mdTable(
      ['peers', 'holder entries', 'sessions/s', 'registered peers/s (files/s)', 'registration s', 'main CPU ms per REGISTER', `RSS MB ${trackers}: empty`, 'with sessions', 'registered', 'bytes per holder entry (main / backups)', 'RSS / holder entry (main)', 'JS heap held, external MB: with sessions → registered'],
      r.sizes.map((s) => {
        const main = s.memory[0]!;
        const backups = s.memory.slice(1);
        return [
          num(s.peers),
          num(s.holderEntries),
          num(s.connect.perSecond),
          `${num(s.register.perSecond)} (${num(s.register.filesPerSecond)})`,
          num(s.register.seconds, 1),
          num(main.registerCpuMsPerPeer, 2),
          s.memory.map((x) => mb(x.emptyBytes)).join(' / '),
          s.memory.map((x) => mb(x.sessionsBytes)).join(' / '),
          s.memory.map((x) => mb(x.registeredBytes)).join(' / '),
          `${num(main.bytesPerHolder)} / ${backups.map((b) => num(b.bytesPerHolder)).join(' / ')}`,
          num(main.totalBytesPerHolder),
          main.sessionsHeapTotalBytes === undefined ? '-' : s.memory.map((x) => `${mb(x.sessionsHeapTotalBytes!)}, ${mb(x.sessionsExternalBytes!)} → ${mb(x.heapTotalBytes!)}, ${mb(x.externalBytes!)}`).join(' / '),
        ];
      }),
    ),
    '',
    'A REGISTER is acknowledged once committed on a backup too. Bytes per holder entry: RSS after every registration less RSS',
    'with the sessions up and no files, over the holder entries; RSS is what the kernel reports (VmRSS), garbage included.',
    '',
    `## Steady load (${st.steadyS} s)`,
    '',
    mdTable(
      ['peers', 'lookups/s', 'lookup ms', 'holders per answer', 'searches/s', 'search ms', 'hits per search', 'server p99 ms lookup / search', 'server wait p99 ms lookup / search', 'heartbeats/s (missed)', 'sessions lost', `CPU % ${trackers} / generator`, 'generator loop delay p99 ms, RSS MB', 'replication lag max entries, commit p99 ms', 'churn left / joined'],
      r.sizes.map((s) => {
        const d = s.steady;
        return [
          num(s.peers),
          num(d.lookups.perSecond),
          lat(d.lookups),
          num(d.lookups.meanCount, 1),
          num(d.searches.perSecond),
          lat(d.searches),
          num(d.searches.meanCount),
          `${ms(d.serverLookupP99Ms)} / ${ms(d.serverSearchP99Ms)}`,
          d.serverLookupWaitP99Ms === undefined ? '-' : `${ms(d.serverLookupWaitP99Ms)} / ${ms(d.serverSearchWaitP99Ms!)}`,
          `${num(d.heartbeatsPerSecond)} (${num(d.heartbeatsMissed)})`,
          num(d.sessionsLost),
          cpu(d.cpuPercent),
          `${ms(d.generatorLoopDelayP99Ms)}, ${mb(d.generatorRssBytes)}`,
          `${num(d.maxBackupLagEntries)}, ${ms(d.commitP99Ms)}`,
          `${num(d.left)} / ${num(d.joined)}`,
        ];
      }),
    ),
    '',
    "Server p99: the main's own histograms (time to answer, queueing before it excluded; bucket bounds); server wait: the time they",
    'waited for their turn there (p2p_tracker_request_wait_seconds, bucket bounds). CPU %: of one core,',
    "user + system from /proc/PID/stat; the generator (workers and the benchmark) shares the machine's CPUs with the",
    "trackers: a generator near 100% per worker, or a loop delay of many milliseconds, delays the requests it sends too.",
    '',
    ...(failover.length
      ? [
          '## Takeover: kill -9 of the main, load running',
          '',
          mdTable(transitionHeaders(trackers, 'new main'), failover.map((s) => transitionRow(s, s.takeover!))),
          '',
          'Times from the SIGKILL. A fresh peer connection to each surviving tracker every 20 ms asks HELLO and, of a tracker that says',
          'it is main in WELCOME, a LOOKUP. Two backups can both be main for a moment in turn (the better rank takes command from the',
          'first elected), and a main can lose command and take it again: "first LOOKUP" is when reads came back (by whom, if not the',
          'main that stayed), "later spells" how many times the probes saw a tracker become main after that. The probes\' connections',
          'are fresh, so they wait behind every reconnecting peer\'s handshake; "a peer\'s first LOOKUP answered" is when the fleet itself',
          'first had a LOOKUP sent after the kill answered (by the new main, or a backup from its copy). "Lists all their files":',
          'every peer has a session with the main that stayed and its holder entries (from its metrics) are all those shared, what a',
          'downloader needs. Re-registered: the last REGISTER of a peer in the fleet acknowledged by the main that stayed, once that',
          "main lists every file of every peer; a peer whose REGISTER waits behind its own lookups (the main refuses requests past",
          "--max-in-flight per connection) counts only once it is answered. A window in which nothing moved for 30 s ends there",
          '("no more came").',
          '',
          '## Takeback: the old main restarted on its --data',
          '',
          mdTable(transitionHeaders(trackers, 'main again'), failover.map((s) => transitionRow(s, s.takeback!))),
          '',
          'Times from the restart (the process start included).',
          ...failover
            .filter((s) => s.heartbeatsAtRest)
            .map((s) => `\n${num(s.peers)} peers, afterwards (the load stopped): heartbeats answered per second by ${trackers}: ${s.heartbeatsAtRest!.map((h) => (h === undefined ? '-' : num(h))).join(' / ')} (over 10 s).`),
        ]
      : []),
    ...(notes.length ? ['', '## Notes', '', ...notes.map((n) => `- ${n}`)] : []),
    '',
    `Machine: Node ${m.node}, ${m.cpus} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB RAM, ${m.platform}; load average ${m.loadAverage.join(' ')} at the start; ${m.date}.`,
    `Code: ${r.code}. The whole run took ${num(r.totalSeconds)} s. Raw figures: fleet.json.`,
    '',
  ].join('\n');
}

export function svg(r: FleetReport): string {
  const categories = r.sizes.map((s) => `${num(s.peers)} peers`);
  const of = (f: (s: SizeResult) => number): Array<number | undefined> => r.sizes.map((s) => (Number.isFinite(f(s)) ? f(s) : undefined));
  const panels: BarPanel[] = [
    {
      kind: 'bar',
      title: 'Joining the cluster',
      yLabel: 'peers per second',
      categories,
      groups: [
        { name: 'sessions up', color: COLORS.adaptive, values: of((s) => s.connect.perSecond) },
        { name: 'registered', color: COLORS.original, values: of((s) => s.register.perSecond) },
      ],
      format: (v) => num(v),
    },
    {
      kind: 'bar',
      title: 'Main tracker memory (RSS)',
      yLabel: 'MB',
      categories,
      groups: [
        { name: 'empty', color: COLORS.grey, values: of((s) => s.memory[0]!.emptyBytes / MB) },
        { name: 'sessions, no files', color: COLORS.adaptive, values: of((s) => s.memory[0]!.sessionsBytes / MB) },
        { name: 'registered', color: COLORS.original, values: of((s) => s.memory[0]!.registeredBytes / MB) },
        { name: 'a backup, registered', color: COLORS.extra, values: of((s) => s.memory[1]!.registeredBytes / MB) },
      ],
      format: (v) => num(v),
    },
    {
      kind: 'bar',
      title: 'Steady load: latency seen by the peers',
      yLabel: 'ms',
      categories,
      groups: [
        { name: 'lookup p50', color: COLORS.ideal, values: of((s) => s.steady.lookups.p50Ms) },
        { name: 'lookup p99', color: COLORS.adaptive, values: of((s) => s.steady.lookups.p99Ms) },
        { name: 'search p50', color: COLORS.aria2c, values: of((s) => s.steady.searches.p50Ms) },
        { name: 'search p99', color: COLORS.original, values: of((s) => s.steady.searches.p99Ms) },
      ],
      format: (v) => ms(v),
    },
    {
      kind: 'bar',
      title: 'Steady load: CPU',
      yLabel: '% of one core',
      categories,
      groups: [
        { name: 'main', color: COLORS.adaptive, values: of((s) => s.steady.cpuPercent.trackers[0] ?? NaN) },
        { name: 'backup 1', color: COLORS.original, values: of((s) => s.steady.cpuPercent.trackers[1] ?? NaN) },
        { name: 'backup 2', color: COLORS.aria2c, values: of((s) => s.steady.cpuPercent.trackers[2] ?? NaN) },
        { name: 'generator', color: COLORS.grey, values: of((s) => s.steady.cpuPercent.generator) },
      ],
      refLines: [{ y: 100 * r.machine.cpus, label: `all ${r.machine.cpus} cores`, color: COLORS.target }],
      format: (v) => num(v),
    },
    {
      kind: 'bar',
      title: 'Takeover and takeback (no bar: not every peer came back)',
      yLabel: 'seconds after the kill / restart',
      categories,
      groups: [
        { name: 'takeover: reads back', color: COLORS.ideal, values: of((s) => (s.takeover?.firstLookupMs ?? NaN) / 1000) },
        { name: 'takeover: all peers', color: COLORS.adaptive, values: of((s) => (s.takeover?.registeredMs ?? NaN) / 1000) },
        { name: 'takeback: reads back', color: COLORS.aria2c, values: of((s) => (s.takeback?.firstLookupMs ?? NaN) / 1000) },
        { name: 'takeback: all peers', color: COLORS.original, values: of((s) => (s.takeback?.registeredMs ?? NaN) / 1000) },
      ],
      format: (v) => num(v, 1),
    },
  ];
  if (!r.sizes.some((s) => s.takeover)) panels.pop();
  const m = r.machine;
  const command = r.command.length > 90 ? `${r.command.slice(0, 87)}...` : r.command;
  return renderChart('Fleet benchmark: one cluster of three trackers', `${command} | ${m.cpus} CPUs, Node ${m.node}, ${m.date.slice(0, 10)} | ${r.code}`, panels);
}
