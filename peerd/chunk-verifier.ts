/**
 * Whether a chunk that arrived is the one the manifest names, and whether its receipt is evidence: the
 * downloader's safety check, one per chunk, apart from the sockets and the file (peerd/downloader.ts asks
 * it, test/unit/chunk-verifier.test.ts drives it with chunks made by hand).
 *
 * A receipt matters as evidence: a report carries at most MAX_RECEIPTS_PER_SERVER of one peer, and a
 * chunk that fails verification is reported with its own. So a peer's first receipts are checked and
 * kept; after them, on a TLS link, only the receipt of a chunk that fails. There the connection has
 * proven the peer's key and the manifest proves a good chunk's bytes: its signature proves nothing more,
 * and skipping it saves a 170 us Ed25519 check per chunk (0.17 CPU s per GiB). On a plain link the receipt
 * is the only proof of who sent the chunk (a relay at the peer's address could pass the first ones through
 * and then serve its own), so every one is checked there. The hash a receipt names must match the bytes,
 * always: else it is no evidence.
 */
import type { Logger } from 'pino';
import { chunkLength, MAX_RECEIPTS_PER_SERVER, receiptPayload, sha256, verifyPayload, type Body, type Manifest } from '../protocol/index.js';
import type { PeerCounters, VerificationFailure } from './counters.js';
import type { ReceiptRecord } from './db.js';
import { checkNow, type Hasher } from './hasher.js';

/** What the check needs to know of the peer a chunk came from (a Source). */
export interface ChunkSender {
  peerId: string;
  address: string;
  publicKey: Buffer;
  /** The link runs in plain TCP: every receipt is checked. */
  plain: boolean;
  /** Receipts of this peer checked so far in this download (counted here). */
  receiptsChecked: number;
}

export interface Verdict {
  /** Why the chunk is refused; undefined when it is good. */
  rejected: VerificationFailure | undefined;
  /** Its receipt's signature was checked: keep it as evidence (`p2p report`). */
  evidence: boolean;
}

export interface BadData {
  fileId: Buffer;
  manifest: Buffer;
  receipt: ReceiptRecord;
  peerId: string;
}

export interface ChunkVerifierDeps {
  fileId: Buffer;
  manifest: Manifest;
  /** The manifest as it came, which a report carries. */
  encodedManifest: Buffer;
  /** This peer's id: receipts are made out to it. */
  ourPeerId: string;
  hasher: Hasher;
  logger: Logger;
  /** A peer caught sending bad data, with its signed receipt: called once per peer. */
  onBadData: (evidence: BadData) => void;
  counters?: PeerCounters | undefined;
}

export class ChunkVerifier {
  /** Peers already reported for bad data in this download. */
  private readonly reported = new Set<string>();

  constructor(private readonly deps: ChunkVerifierDeps) {}

  /**
   * The verdict on chunk `index` as `s` sent it. `inline`: check on this thread rather than in the hash
   * worker. Handing a chunk to the worker costs a wake-up of another thread, which on a busy machine took
   * 50-130 ms (lab, 12-20 seeders); the first chunk is checked inline, all of it before the first verified
   * byte, in about 1 ms.
   */
  async verify(s: ChunkSender, index: number, chunk: Body<'CHUNK'>, inline = false): Promise<Verdict> {
    const v = await this.verdict(s, index, chunk, inline);
    if (v.rejected && this.deps.counters) this.deps.counters.verificationFailures[v.rejected]++;
    return v;
  }

  /** A checked receipt whose chunk was not kept (an endgame duplicate that lost, the download ending) gives its place back. */
  unused(s: ChunkSender): void {
    s.receiptsChecked--;
  }

  private async verdict(s: ChunkSender, index: number, chunk: Body<'CHUNK'>, inline: boolean): Promise<Verdict> {
    const { fileId, manifest: m, logger: log } = this.deps;
    if (chunk.index !== index || !chunk.fileId.equals(fileId)) {
      log.warn({ peer: s.address, index }, 'chunk came with a receipt for another chunk; dropping the peer');
      return { rejected: 'bad_receipt', evidence: false };
    }
    const payload = receiptPayload(fileId, index, chunk.hash, this.deps.ourPeerId);
    const receipt = { publicKey: s.publicKey, payload, signature: chunk.signature };
    // Counted as the check starts (checks run several at a time); given back if the chunk is not kept.
    const evidence = s.receiptsChecked < MAX_RECEIPTS_PER_SERVER;
    if (evidence) s.receiptsChecked++;
    const check = evidence || s.plain;
    let actual: Buffer;
    let signed = false;
    if (check) ({ hash: actual, signed } = inline ? checkNow(chunk.data, receipt) : await this.deps.hasher.check(chunk.data, receipt));
    else actual = inline ? sha256(chunk.data) : await this.deps.hasher.sha256(chunk.data);
    const matches = chunk.hash.equals(actual);
    const good = chunk.data.length === chunkLength(m, index) && actual.equals(m.hashes[index]!);
    // A bad chunk's receipt is the evidence against its sender: checked here if it was not already.
    if (!check && !good && matches) signed = verifyPayload(receipt.publicKey, receipt.payload, receipt.signature);
    if (!matches || ((check || !good) && !signed)) {
      log.warn({ peer: s.address, index }, 'chunk came with a receipt that does not match; dropping the peer');
      return { rejected: 'bad_receipt', evidence: false };
    }
    if (!good) {
      // Checks finish in any order, and may finish after the peer was dropped or the download ended:
      // every peer caught is reported, once.
      if (this.reported.has(s.peerId)) return { rejected: 'bad_data', evidence: false };
      this.reported.add(s.peerId);
      log.warn({ peer: s.address, peerId: s.peerId, index }, 'chunk failed verification; fetching it elsewhere and reporting the sender');
      this.deps.onBadData({ fileId, manifest: this.deps.encodedManifest, receipt: receiptOf(s, index, chunk), peerId: s.peerId });
      return { rejected: 'bad_data', evidence: false };
    }
    return { rejected: undefined, evidence };
  }
}

/** A chunk's receipt, copied out of the chunk's buffer (which is reused). */
export function receiptOf(s: Pick<ChunkSender, 'publicKey'>, index: number, chunk: Body<'CHUNK'>): ReceiptRecord {
  return { publicKey: s.publicKey, index, hash: Buffer.from(chunk.hash), signature: Buffer.from(chunk.signature) };
}
