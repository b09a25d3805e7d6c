/**
 * Checking a report before it can harm anyone. A report names a file and carries chunk receipts: each
 * one signed by a serving peer over (file id, chunk index, SHA-256 of the bytes sent, the reporter's id).
 * Only peers whose valid receipts the reporter holds can be reported, so nobody can report a peer it
 * did not download from. Evidence of bad data (a receipted hash that differs from the manifest, which is
 * checked against the file id) proves that one peer sent wrong bytes.
 *
 * The check has a cheap part and a costly part (issue 10). `planReport` applies the caps and picks the
 * receipts that can prove anything, with no signature checked and nothing hashed; `reportChecks` is the
 * costly rest as steps for SlicedWork (daemon/sliced-work.ts): one unit per signature, one per piece of the
 * manifest hashed.
 */
import { createHash } from 'node:crypto';
import {
  Evidence,
  MAX_RECEIPTS_PER_SERVER,
  MAX_REPORT_RECEIPTS,
  manifestHashAt,
  manifestHead,
  P2PError,
  peerIdOf,
  receiptPayload,
  verifyPayload,
  type Body,
} from '../protocol/index.js';

export type ReportPolicy = { kind: 'immediate' } | { kind: 'threshold'; k: number } | { kind: 'review' };

export function parseReportPolicy(text: string): ReportPolicy {
  if (text === 'immediate') return { kind: 'immediate' };
  if (text === 'review') return { kind: 'review' };
  const m = /^threshold:(\d+)$/.exec(text);
  if (m && Number(m[1]) >= 1) return { kind: 'threshold', k: Number(m[1]) };
  throw new P2PError('P2P_BAD_REQUEST', `report policy '${text}' is not immediate, threshold:K (K >= 1) or review`);
}

export const EVIDENCE_USER = Evidence.user;
export const EVIDENCE_BAD_DATA = Evidence.badData;

/** Bytes of the manifest hashed per unit of work (about 0.1 ms, as one signature check takes 0.15). */
const MANIFEST_BYTES_PER_UNIT = 64 * 1024;

type Receipt = Body<'REPORT'>['receipts'][number];

export interface CheckedReport {
  /** Peers the receipts prove the reporter downloaded this file from. */
  servedBy: string[];
  /** Peers proven to have sent bytes that do not match the manifest. */
  badData: string[];
}

/** What is left to check of a report that passed the caps. */
export interface ReportPlan {
  readonly report: Body<'REPORT'>;
  readonly reporterId: string;
  /** The receipts that can prove something: all of a user's report; only those that disagree with the manifest for bad data. */
  readonly receipts: Receipt[];
  /** The signature checks it needs (what the reporter's budget pays). */
  readonly signatureChecks: number;
  /** Every unit of work left: the signatures, and the manifest's hash for bad data. */
  readonly units: number;
}

/**
 * The caps, and which receipts are evidence at all, without a signature checked or a byte hashed. Throws
 * P2P_TOO_MANY_RECEIPTS over a cap and P2P_BAD_EVIDENCE when nothing in it could prove the report.
 */
export function planReport(report: Body<'REPORT'>, reporterId: string): ReportPlan {
  const { receipts } = report;
  if (receipts.length === 0) throw new P2PError('P2P_BAD_EVIDENCE', 'the report carries no receipts: there is no download to report');
  if (receipts.length > MAX_REPORT_RECEIPTS) {
    throw new P2PError('P2P_TOO_MANY_RECEIPTS', `${receipts.length} receipts in one report; at most ${MAX_REPORT_RECEIPTS} are taken`);
  }
  const perServer = new Map<string, number>();
  for (const r of receipts) {
    const key = r.publicKey.toString('hex');
    const n = (perServer.get(key) ?? 0) + 1;
    if (n > MAX_RECEIPTS_PER_SERVER) {
      throw new P2PError('P2P_TOO_MANY_RECEIPTS', `more than ${MAX_RECEIPTS_PER_SERVER} receipts from one serving peer; one proves the download, and a few are plenty`);
    }
    perServer.set(key, n);
  }
  if (report.evidence !== EVIDENCE_BAD_DATA) {
    // A user's report names every peer served: each receipt proves one of them. The manifest proves nothing here.
    return { report, reporterId, receipts, signatureChecks: receipts.length, units: receipts.length };
  }
  const { manifest } = report;
  if (manifest.length === 0) throw new P2PError('P2P_BAD_EVIDENCE', 'bad-data evidence needs the manifest of the file id');
  try {
    manifestHead(manifest);
  } catch {
    throw new P2PError('P2P_BAD_EVIDENCE', 'bad-data evidence needs the manifest of the file id; this one does not decode');
  }
  // A receipt that agrees with the manifest proves only a good chunk: it is no evidence against anyone.
  const disagreeing = receipts.filter((r) => {
    const expected = manifestHashAt(manifest, r.index);
    return expected !== undefined && !expected.equals(r.hash);
  });
  if (disagreeing.length === 0) throw new P2PError('P2P_BAD_EVIDENCE', 'no receipt shows bytes that differ from the manifest');
  const hashUnits = Math.ceil(manifest.length / MANIFEST_BYTES_PER_UNIT);
  return { report, reporterId, receipts: disagreeing, signatureChecks: disagreeing.length, units: disagreeing.length + hashUnits };
}

/**
 * The costly checks of a plan, one unit per `yield`: the manifest against the file id (bad data), then
 * every receipt's signature. Throws P2P_BAD_EVIDENCE unless the report proves what it claims.
 */
export function* reportChecks(plan: ReportPlan): Generator<void, CheckedReport> {
  const { report, reporterId } = plan;
  const badData = report.evidence === EVIDENCE_BAD_DATA;
  if (badData) {
    const hash = createHash('sha256');
    for (let at = 0; at < report.manifest.length; at += MANIFEST_BYTES_PER_UNIT) {
      hash.update(report.manifest.subarray(at, at + MANIFEST_BYTES_PER_UNIT));
      yield;
    }
    if (!hash.digest().equals(report.fileId)) throw new P2PError('P2P_BAD_EVIDENCE', 'bad-data evidence needs the manifest of the file id; this one is another file\'s');
  }
  const servedBy = new Set<string>();
  for (const r of plan.receipts) {
    const payload = receiptPayload(report.fileId, r.index, r.hash, reporterId);
    if (!verifyPayload(r.publicKey, payload, r.signature)) {
      throw new P2PError('P2P_BAD_EVIDENCE', `a receipt for chunk ${r.index} is not signed by the peer it names`);
    }
    servedBy.add(peerIdOf(r.publicKey));
    yield;
  }
  return { servedBy: [...servedBy], badData: badData ? [...servedBy] : [] };
}
