import type { SerializedRingError } from '../errors.js';

/**
 * Every control message that crosses a link, as a discriminated union on `t`.
 * Control messages are msgpackr-encoded; bulk data never is (see wire.ts).
 */

export interface ChallengeMsg { t: 'challenge'; nonce: Uint8Array; rank: number; role: 'rank' | 'store' }
export interface AuthMsg { t: 'auth'; nonce: Uint8Array; rank: number; mac: Uint8Array }
export interface WelcomeMsg { t: 'welcome'; mac: Uint8Array }
/** A collective's descriptor travelling around the ring: every rank learns every rank's descriptor. */
export interface DescMsg {
  t: 'desc';
  seq: number;
  origin: number;
  /**
   * The origin's operation descriptor. The link checks only that it is a record; what it holds
   * is the collectives' business (the communicator validates it: collectives/descriptor.ts).
   */
  d: Record<string, unknown>;
  /** The origin's whole input, for operations small enough to ride along (see collectives/eager.ts). */
  p?: Uint8Array;
}
/** A fatal error at `origin`: the receiver fails every pending operation and forwards it. */
export interface AbortMsg { t: 'abort'; origin: number; error: SerializedRingError }
/** The sender has called shutdown(): it will send nothing more. */
export interface ByeMsg { t: 'bye'; rank: number }
/** "Still here", sent to the left neighbour every `everyMs`, so that a stalled rank can be named. */
export interface BeatMsg { t: 'beat'; rank: number; everyMs: number }

export type LinkControlMessage = DescMsg | AbortMsg | ByeMsg | BeatMsg;
export type HandshakeMessage = ChallengeMsg | AuthMsg | WelcomeMsg;

// Rendezvous store protocol (after the same handshake).
export interface StoreSetMsg { t: 'set'; id: number; key: string; value: unknown }
export interface StoreGetMsg { t: 'get'; id: number; keys: string[]; timeoutMs: number }
export interface StoreOkMsg { t: 'ok'; id: number; values?: unknown[] }
export interface StoreErrMsg { t: 'err'; id: number; message: string; missing?: string[] }
export type StoreRequest = StoreSetMsg | StoreGetMsg;
export type StoreResponse = StoreOkMsg | StoreErrMsg;
