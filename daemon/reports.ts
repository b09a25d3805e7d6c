/**
 * Checking a report before it can harm anyone. A report names a file and carries chunk receipts: each
 * one signed by a serving peer over (file id, chunk index, SHA-256 of the bytes sent, the reporter's id).
 * Only peers whose valid receipts the reporter holds can be reported, so nobody can report a peer it
 * did not download from. Evidence of bad data (a receipted hash that differs from the manifest, which is
 * checked against the file id) proves that one peer sent wrong bytes.
 */
import { P2PError, peerIdOf, receiptPayload, verifyManifest, verifyPayload, type Body } from '../protocol/index.js';

export type ReportPolicy = { kind: 'immediate' } | { kind: 'threshold'; k: number } | { kind: 'review' };

export function parseReportPolicy(text: string): ReportPolicy {
  if (text === 'immediate') return { kind: 'immediate' };
  if (text === 'review') return { kind: 'review' };
  const m = /^threshold:(\d+)$/.exec(text);
  if (m && Number(m[1]) >= 1) return { kind: 'threshold', k: Number(m[1]) };
  throw new P2PError('P2P_BAD_REQUEST', `report policy '${text}' is not immediate, threshold:K (K >= 1) or review`);
}

export const EVIDENCE_USER = 0;
export const EVIDENCE_BAD_DATA = 1;

export interface CheckedReport {
  /** Peers the receipts prove the reporter downloaded this file from. */
  servedBy: string[];
  /** Peers proven to have sent bytes that do not match the manifest. */
  badData: string[];
}

/** Verifies every receipt; throws P2P_BAD_EVIDENCE unless the report proves what it claims. */
export function checkReport(report: Body<'REPORT'>, reporterId: string): CheckedReport {
  if (report.receipts.length === 0) throw new P2PError('P2P_BAD_EVIDENCE', 'the report carries no receipts: there is no download to report');
  if (report.receipts.length > 100_000) throw new P2PError('P2P_BAD_EVIDENCE', 'too many receipts');
  const servedBy = new Set<string>();
  const badData = new Set<string>();
  const manifest = report.manifest.length > 0 ? verifyManifest(report.manifest, report.fileId) : undefined;
  if (report.evidence === EVIDENCE_BAD_DATA && !manifest) {
    throw new P2PError('P2P_BAD_EVIDENCE', 'bad-data evidence needs the manifest of the file id');
  }
  for (const r of report.receipts) {
    const payload = receiptPayload(report.fileId, r.index, r.hash, reporterId);
    if (!verifyPayload(r.publicKey, payload, r.signature)) {
      throw new P2PError('P2P_BAD_EVIDENCE', `a receipt for chunk ${r.index} is not signed by the peer it names`);
    }
    const peerId = peerIdOf(r.publicKey);
    servedBy.add(peerId);
    if (manifest) {
      const expected = manifest.hashes[r.index];
      if (expected && !expected.equals(r.hash)) badData.add(peerId);
    }
  }
  if (report.evidence === EVIDENCE_BAD_DATA && badData.size === 0) {
    throw new P2PError('P2P_BAD_EVIDENCE', 'no receipt shows bytes that differ from the manifest');
  }
  return { servedBy: [...servedBy], badData: [...badData] };
}
