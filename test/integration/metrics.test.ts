/**
 * Issue 11: `--metrics HOST:PORT` on both daemons. Real daemons on loopback, scraped over real HTTP during
 * and after a real download: the counters an operator watches move (bytes down on the downloader, up on
 * the seeder, lookups and sessions on the tracker, downloads done), the output is valid Prometheus text,
 * other paths are a 404, and the endpoint goes away with its daemon. A cluster of two shows role, term
 * and backup lag; a bad --metrics value is a usage error and a --metrics port in use stops the start,
 * for both programs.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { Tracker } from '../../daemon/tracker.js';
import { PeerDaemon } from '../../peerd/index.js';
import type { Address } from '../../protocol/index.js';
import { Fleet } from '../helpers/fleet.js';
import { until } from '../helpers/wait.js';
import { parsePrometheusText, sampleValue, scrape, type Family } from '../helpers/prometheus.js';
import { ROOT, run } from '../helpers/programs.js';
import type { Tap } from '../helpers/tap.js';

const MiB = 1024 * 1024;
const ANY_PORT: Address = { host: '127.0.0.1', port: 0 };

/** Scrapes /metrics and parses it (throws on anything but a 200 in Prometheus text format 0.0.4). */
async function metricsOf(address: Address | undefined): Promise<Map<string, Family>> {
  if (!address) throw new Error('no metrics address: the daemon was started without --metrics');
  const r = await scrape(address);
  if (r.status !== 200) throw new Error(`GET /metrics answered ${r.status}`);
  if (!/^text\/plain; version=0\.0\.4/.test(r.contentType)) throw new Error(`GET /metrics answered ${r.contentType}, not Prometheus text`);
  return parsePrometheusText(r.body);
}

t.test('the test\'s exposition parser refuses what Prometheus would', async (t) => {
  const ok = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1",y="a \\"q\\""} 3\n';
  t.same(sampleValue(parsePrometheusText(ok), 'a_total', { y: 'a "q"' }), 3, 'a valid exposition parses, escapes and all');
  for (const bad of ['b 1\n', '# TYPE a counter\na{x=1} 1\n', '# TYPE a gauge\na one\n', '# TYPE h histogram\nh 1\n', '# TYPE a gauge\na 1']) {
    t.throws(() => parsePrometheusText(bad), `refused: ${JSON.stringify(bad)}`);
  }
});

/** Our own families (not prom-client's defaults) follow the naming rules. */
function checkNaming(t: Tap, families: Map<string, Family>, prefix: string): void {
  const ours = [...families.values()].filter((f) => f.name.startsWith(prefix));
  t.ok(ours.length >= 10, `${ours.length} ${prefix}* families`);
  for (const f of ours) {
    if (f.help === '') t.fail(`${f.name} has no HELP`);
    if (f.type === 'counter' && !f.name.endsWith('_total')) t.fail(`counter ${f.name} does not end in _total`);
    if (f.type !== 'counter' && f.name.endsWith('_total')) t.fail(`${f.type} ${f.name} ends in _total`);
    if (f.type === 'histogram' && !f.name.endsWith('_seconds')) t.fail(`histogram ${f.name} is not in seconds`);
  }
  t.ok(families.has('process_cpu_user_seconds_total') && families.has('nodejs_heap_size_used_bytes'), 'with the default process and Node.js metrics');
}

interface DashboardPanel {
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { uid: string };
  targets?: Array<{ expr: string; datasource: { uid: string } }>;
}

/**
 * ops/grafana/p2pshare.json: a Grafana dashboard on a Prometheus datasource variable, whose panels do not
 * overlap, and whose every p2p_* metric is one the daemons really serve (`families`, scraped).
 */
function checkDashboard(t: Tap, families: Map<string, Family>): void {
  const dashboard = JSON.parse(fs.readFileSync(path.join(ROOT, 'ops/grafana/p2pshare.json'), 'utf8')) as {
    title: string;
    uid: string;
    schemaVersion: number;
    templating: { list: Array<{ name: string; type: string; query: unknown }> };
    panels: DashboardPanel[];
  };
  t.ok(dashboard.title && dashboard.uid && dashboard.schemaVersion > 30, 'the dashboard has a title, a uid and a current schema version');
  t.ok(dashboard.templating.list.some((v) => v.name === 'datasource' && v.type === 'datasource' && v.query === 'prometheus'), 'with a Prometheus datasource variable');
  const cells = new Set<string>();
  const named = new Set<string>();
  for (const p of dashboard.panels) {
    const { x, y, w, h } = p.gridPos;
    if (x < 0 || w < 1 || x + w > 24) t.fail(`panel '${p.title}' is outside the 24-column grid`);
    for (let i = x; i < x + w; i++) {
      for (let j = y; j < y + h; j++) {
        if (cells.has(`${i},${j}`)) t.fail(`panel '${p.title}' overlaps another`);
        cells.add(`${i},${j}`);
      }
    }
    if (p.type === 'row') continue;
    if (p.datasource?.uid !== '${datasource}' || !p.targets?.length) t.fail(`panel '${p.title}' does not query the datasource variable`);
    for (const target of p.targets ?? []) {
      if (target.datasource.uid !== '${datasource}') t.fail(`a query of '${p.title}' does not use the datasource variable`);
      for (const [name] of target.expr.matchAll(/\bp2p_(?:tracker|peerd)_[a-z_]+/g)) named.add(name);
    }
  }
  const missing = [...named].filter((n) => !families.has(n) && !families.has(n.replace(/_(bucket|sum|count)$/, '')));
  t.same(missing, [], `every one of the ${named.size} metrics on the dashboard is served`);
  const shown = new Set([...named].map((n) => n.replace(/_(bucket|sum|count)$/, '')));
  const unshown = [...families.keys()].filter((n) => /^p2p_(tracker|peerd)_/.test(n) && !shown.has(n));
  t.same(unshown, [], 'and every metric served is on the dashboard');
}

function refusedToConnect(address: Address): Promise<boolean> {
  return scrape(address).then(
    () => false,
    (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED',
  );
}

t.test('a download, scraped during and after: the counters of the tracker, the seeder and the downloader move', async (t) => {
  const fleet = new Fleet(t);
  const tracker = await fleet.startTracker({ metrics: ANY_PORT });
  const seeder = await fleet.startPeer('seeder', { metrics: ANY_PORT });
  // Held to 4 MiB/s, so that the download is still under way when it is scraped.
  const downloader = await fleet.startPeer('downloader', { metrics: ANY_PORT, maxDownloadRate: 4 * MiB });
  const at = { tracker: tracker.metricsAddress!, seeder: seeder.daemon.metricsAddress!, downloader: downloader.daemon.metricsAddress! };
  t.not(at.tracker.port, 0, 'port 0 binds a free port, and the daemon says which');

  const name = 'metrics-sample.bin';
  const file = path.join(seeder.shareDir, name);
  Fleet.randomFile(file, 8);
  const size = fs.statSync(file).size;
  await seeder.call('share', { paths: [file] });
  await Fleet.held(downloader, name, 1);

  const before = await metricsOf(at.downloader);
  t.equal(sampleValue(before, 'p2p_peerd_download_bytes_total', { link: 'tls' }), 0, 'no bytes down before the download');
  t.equal(sampleValue(before, 'p2p_peerd_downloads_active'), 0, 'no download active');
  t.equal(sampleValue(before, 'p2p_peerd_tracker_connected'), 1, 'connected to the tracker');
  checkNaming(t, before, 'p2p_peerd_');

  const out = path.join(fleet.dir, 'got.bin');
  const getting = downloader.call('get', { key: name, out, overwrite: false });
  const during = await until('the download under way, with some bytes down', async () => {
    const m = await metricsOf(at.downloader);
    return sampleValue(m, 'p2p_peerd_downloads_active') === 1 && sampleValue(m, 'p2p_peerd_download_bytes_total', { link: 'tls' }) > 0 ? m : undefined;
  });
  const bytesDuring = sampleValue(during, 'p2p_peerd_download_bytes_total', { link: 'tls' });
  t.ok(bytesDuring > 0 && bytesDuring < size, `during: ${bytesDuring} of ${size} bytes down`);
  const result = await getting;
  t.equal(result.size, size, 'the download finished');

  const d = await metricsOf(at.downloader);
  t.equal(sampleValue(d, 'p2p_peerd_download_bytes_total', { link: 'tls' }), size, 'after: every byte of the file counted down, once');
  t.equal(sampleValue(d, 'p2p_peerd_download_chunks_total', { link: 'tls' }), Math.ceil(size / MiB), 'and every chunk');
  t.equal(sampleValue(d, 'p2p_peerd_download_bytes_total', { link: 'plain' }), 0, 'nothing over plain links');
  t.equal(sampleValue(d, 'p2p_peerd_downloads_done_total'), 1, 'one download done');
  t.equal(sampleValue(d, 'p2p_peerd_downloads_active'), 0, 'none active');
  t.equal(d.get('p2p_peerd_downloads_failed_total')!.samples.length, 0, 'none failed');
  t.equal(sampleValue(d, 'p2p_peerd_verification_failures_total', { kind: 'bad_data' }), 0, 'no verification failure');
  t.ok(sampleValue(d, 'p2p_peerd_rate_limit_waits_total', { direction: 'download' }) > 0, 'chunks waited for --max-download-rate');
  t.ok(sampleValue(d, 'p2p_peerd_rate_limit_wait_seconds_total', { direction: 'download' }) > 0.5, 'for a measurable time');
  t.equal(d.get('p2p_peerd_rate_limit_waits_total')!.samples.length, 1, 'no upload series without an upload limit');
  t.equal(sampleValue(d, 'p2p_peerd_shared_files'), 1, 'the downloaded file is shared');

  const s = await metricsOf(at.seeder);
  t.ok(sampleValue(s, 'p2p_peerd_upload_bytes_total', { link: 'tls' }) >= size, 'the seeder counted the bytes up');
  t.ok(sampleValue(s, 'p2p_peerd_upload_chunks_total', { link: 'tls' }) >= Math.ceil(size / MiB), 'and the chunks');
  t.equal(sampleValue(s, 'p2p_peerd_upload_slots'), 8, 'upload slots: --max-uploads');
  t.equal(sampleValue(s, 'p2p_peerd_upload_slots_in_use'), 0, 'none in use once the upload is done');
  t.equal(sampleValue(s, 'p2p_peerd_download_bytes_total', { link: 'tls' }), 0, 'the seeder downloaded nothing');

  // A client that does not speak TLS is refused; the tracker counts it by code.
  const plainClient = net.connect(fleet.trackerAddress.port, '127.0.0.1');
  plainClient.on('error', () => undefined);
  plainClient.end('GET / HTTP/1.0\r\n\r\n');
  const tr = await until('the tracker to count the refused plain client, and the downloader to register its copy', async () => {
    const m = await metricsOf(at.tracker);
    const refused = m.get('p2p_tracker_connections_refused_total')!.samples.find((x) => x.labels.code === 'P2P_TLS_REQUIRED');
    return refused && sampleValue(m, 'p2p_tracker_holder_entries') === 2 ? m : undefined;
  });
  t.ok(sampleValue(tr, 'p2p_tracker_lookups_total', { result: 'found' }) >= 1, 'the tracker counted the lookup');
  t.ok(sampleValue(tr, 'p2p_tracker_lookup_duration_seconds_count') >= 1, 'and timed it');
  t.ok(sampleValue(tr, 'p2p_tracker_searches_total') >= 1, 'and the searches');
  t.ok(sampleValue(tr, 'p2p_tracker_request_wait_seconds_count', { class: 'ordinary' }) >= 1, 'and how long the lookup waited for its turn');
  t.ok(sampleValue(tr, 'p2p_tracker_request_wait_seconds_count', { class: 'urgent' }) >= 2, 'and the registrations');
  t.equal(sampleValue(tr, 'p2p_tracker_sessions', { role: 'peer' }), 2, 'two peer sessions');
  t.ok(sampleValue(tr, 'p2p_tracker_tls_handshake_seconds_count') >= 2, "the peers' TLS handshakes were timed from their turn");
  t.equal(sampleValue(tr, 'p2p_tracker_tls_handshakes', { state: 'waiting' }), 0, 'no client waits for a TLS turn once they are in');
  t.equal(sampleValue(tr, 'p2p_tracker_tls_handshakes', { state: 'running' }), 0, 'and no turn is under way');
  t.equal(sampleValue(tr, 'p2p_tracker_files_registered'), 1, 'one file');
  t.equal(sampleValue(tr, 'p2p_tracker_peers_registered'), 2, 'held by two peers');
  t.ok(sampleValue(tr, 'p2p_tracker_writes_total', { op: 'register' }) >= 2, 'registrations were committed writes');
  t.ok(sampleValue(tr, 'p2p_tracker_write_commit_seconds_count') >= 2, 'with their commit latency');
  t.equal(sampleValue(tr, 'p2p_tracker_role', { role: 'primary' }), 1, 'a lone tracker is the main');
  t.equal(sampleValue(tr, 'p2p_tracker_role', { role: 'backup' }), 0, 'and nothing else');
  t.equal(sampleValue(tr, 'p2p_tracker_elections_started_total'), 1, 'it took command once');
  t.equal(sampleValue(tr, 'p2p_tracker_backups'), 0, 'no backups');
  t.equal(sampleValue(tr, 'p2p_tracker_blacklist_entries'), 0, 'an empty blacklist');
  checkNaming(t, tr, 'p2p_tracker_');

  await downloader.call('report', { key: name, reason: 'the metrics test reports its seeder' });
  const afterReport = await metricsOf(at.tracker);
  t.equal(sampleValue(afterReport, 'p2p_tracker_reports_total', { outcome: 'blacklisted' }), 1, 'a report is counted by its outcome');
  t.equal(sampleValue(afterReport, 'p2p_tracker_reports_total', { outcome: 'refused' }), 0, 'and none refused');
  t.equal(sampleValue(afterReport, 'p2p_tracker_blacklist_entries'), 1, 'the blacklist grew by the seeder');

  t.match((await scrape(at.tracker)).contentType, /^text\/plain; version=0\.0\.4/, 'served as Prometheus text format 0.0.4');
  for (const p of ['/', '/metrics/x', '/favicon.ico']) t.equal((await scrape(at.tracker, p)).status, 404, `GET ${p}: 404`);

  checkDashboard(t, new Map([...tr, ...d]));

  await downloader.stop();
  await seeder.stop();
  await tracker.close();
  for (const [who, address] of Object.entries(at)) t.ok(await refusedToConnect(address), `the ${who}'s metrics endpoint closed with it`);
});

t.test('plain chunk links are counted as link="plain"', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const seeder = await fleet.startPeer('seeder', { metrics: ANY_PORT, plainChunkLinks: true });
  const downloader = await fleet.startPeer('downloader', { metrics: ANY_PORT, plainChunkLinks: true });
  const file = path.join(seeder.shareDir, 'plain.bin');
  Fleet.randomFile(file, 2);
  const size = fs.statSync(file).size;
  await seeder.call('share', { paths: [file] });
  await Fleet.held(downloader, 'plain.bin', 1);
  await downloader.call('get', { key: 'plain.bin', out: path.join(fleet.dir, 'got.bin'), overwrite: false });
  const d = await metricsOf(downloader.daemon.metricsAddress);
  t.equal(sampleValue(d, 'p2p_peerd_download_bytes_total', { link: 'plain' }), size, 'bytes down over the plain link');
  t.equal(sampleValue(d, 'p2p_peerd_download_bytes_total', { link: 'tls' }), 0, 'none in TLS');
  const s = await metricsOf(seeder.daemon.metricsAddress);
  t.ok(sampleValue(s, 'p2p_peerd_upload_bytes_total', { link: 'plain' }) >= size, 'bytes up over the plain link on the seeder');
});

t.test('a cluster of two: role, term, backups and their lag', async (t) => {
  const fleet = new Fleet(t);
  const [main, backup] = await fleet.startCluster(2, { metrics: ANY_PORT });
  const peer = await fleet.startPeer('peer');
  const file = path.join(peer.shareDir, 'cluster.bin');
  fs.writeFileSync(file, 'replicated');
  await peer.call('share', { paths: [file] });
  await Fleet.held(peer, 'cluster.bin', 1);

  const m = await until('the backup caught up, as the main sees it', async () => {
    const x = await metricsOf(main!.metricsAddress);
    return sampleValue(x, 'p2p_tracker_backups') === 1 && sampleValue(x, 'p2p_tracker_backup_lag_entries', { rank: '1' }) === 0 ? x : undefined;
  });
  t.equal(sampleValue(m, 'p2p_tracker_role', { role: 'primary' }), 1, 'the first is the main');
  t.equal(m.get('p2p_tracker_backup_lag_entries')!.samples[0]!.labels.address, `127.0.0.1:${backup!.address!.port}`, 'the lag names the backup by rank and address');
  t.ok(sampleValue(m, 'p2p_tracker_elections_started_total') >= 1, 'the main ran for it');
  t.ok(sampleValue(m, 'p2p_tracker_writes_total', { op: 'register' }) >= 1, 'the registration was committed');
  t.equal(sampleValue(m, 'p2p_tracker_sessions', { role: 'tracker' }), 1, 'one link from the other tracker');

  const b = await metricsOf(backup!.metricsAddress);
  t.equal(sampleValue(b, 'p2p_tracker_role', { role: 'backup' }), 1, 'the second is a backup');
  t.equal(sampleValue(b, 'p2p_tracker_term'), sampleValue(m, 'p2p_tracker_term'), 'in the main\'s term');
  t.equal(b.get('p2p_tracker_backup_lag_entries')!.samples.length, 0, 'a backup reports no lag of its own');
  t.equal(sampleValue(b, 'p2p_tracker_files_registered'), 1, 'the backup holds the registration too');
  t.ok(sampleValue(b, 'p2p_tracker_applied_index') > 0, 'and has applied the log');
});

/** A port some other program holds. */
async function portInUse(t: Tap): Promise<Address> {
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
  return { host: '127.0.0.1', port: (squatter.address() as net.AddressInfo).port };
}

t.test('a --metrics port in use: neither daemon starts, and the error says why', async (t) => {
  const fleet = new Fleet(t);
  const taken = await portInUse(t);
  const inUse = new RegExp(`^--metrics 127\\.0\\.0\\.1:${taken.port}: the address is already in use`);

  const tracker = new Tracker({ listen: ANY_PORT, dataDir: path.join(fleet.dir, 'tracker'), metrics: taken });
  await t.rejects(tracker.listen(), inUse, 'Tracker.listen() rejects');
  t.equal(tracker.address, undefined, 'and the tracker never listened');
  await tracker.close();

  await fleet.startTracker();
  const peer = new PeerDaemon({ trackers: [fleet.trackerAddress], shareDir: fleet.dir, dataDir: path.join(fleet.dir, 'peer'), listen: ANY_PORT, metrics: taken });
  await t.rejects(peer.start(), inUse, 'PeerDaemon.start() rejects');
  t.equal(peer.chunkServer.address, undefined, 'before it served a chunk');
  await peer.close();

  // The programs: exit code 1 and that reason on one line.
  const args = { 'p2p-tracker': ['--listen', '127.0.0.1:0', '--data', path.join(fleet.dir, 'prog-tracker')], 'p2p-peerd': ['--trackers', '127.0.0.1:1', '--share', fleet.dir, '--data', path.join(fleet.dir, 'prog-peer'), '--listen', '127.0.0.1:0'] } as const;
  for (const program of ['p2p-tracker', 'p2p-peerd'] as const) {
    const r = await run(program, [...args[program], '--metrics', `127.0.0.1:${taken.port}`, '--log-level', 'silent']);
    t.equal(r.code, 1, `${program} exits 1`);
    t.match(r.stderr, new RegExp(`^${program}: cannot start: --metrics 127\\.0\\.0\\.1:${taken.port}: the address is already in use`), `${program} says the --metrics address is in use`);
    t.equal(r.stderr.trim().split('\n').length, 1, 'on one line');
  }
});

t.test('--metrics in --help, and a bad --metrics value is a usage error (exit 2, one line), for both programs', async (t) => {
  const fleet = new Fleet(t);
  const base = { 'p2p-tracker': ['--listen', '127.0.0.1:0', '--data', path.join(fleet.dir, 't')], 'p2p-peerd': ['--trackers', '127.0.0.1:1', '--share', fleet.dir, '--data', path.join(fleet.dir, 'p')] } as const;
  for (const program of ['p2p-tracker', 'p2p-peerd'] as const) {
    const help = await run(program, ['--help']);
    t.match(help.stdout, /--metrics\s+serve Prometheus metrics at\s+http:\/\/HOST:PORT\/metrics/, `${program} --help documents --metrics`);
    for (const bad of ['nowhere', '127.0.0.1:99999', '']) {
      const r = await run(program, [...base[program], '--metrics', bad]);
      t.equal(r.code, 2, `${program} --metrics '${bad}' exits 2`);
      t.match(r.stderr, new RegExp(`^${program}: --metrics: `), 'and names the flag');
      t.equal(r.stderr.trim().split('\n').length, 1, 'on one line');
    }
  }
});
