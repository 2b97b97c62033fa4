import { codecFor } from '../compression/registry.js';
import { isRingErrorCode, RingProtocolError, type RingErrorDetails, type SerializedRingError } from '../errors.js';
import { peerText, peerValue } from '../peer-text.js';
import type { DataHeader } from '../transport/wire.js';

/**
 * The parameter-server protocol, on a link a worker opened to a server (channel 'ps', the job
 * token's handshake: see transport/ws). Control messages (msgpack, validated field by field below)
 * and data frames (the 24-byte DataHeader, payload raw):
 *
 *   worker -> server  'hello'  first message: the worker's rank, the number of workers, the mode,
 *                              its staleness bound and wire codec, and the chunks it expects this
 *                              server to hold (keys and lengths: see partition.ts). Every worker
 *                              must agree with the first one; rank 0's may name a checkpoint to
 *                              restore (`restore`)
 *                     'init'   rank 0 only, after hello: the inner optimizer's class and config;
 *                              then one INIT frame per chunk (its initial weights, fp32)
 *   server -> worker  'ready'  the server is initialised: workers start at step `step` (0, or the
 *                              restored one)
 *   worker -> server  'lr'     {value}: the workers' optimizer has a new learning rate (a schedule):
 *                              the server's optimizers use it from the next update on; sent before
 *                              a step's PUSH frames, only when it changed
 *   worker -> server  PUSH frames, one per chunk of step `step` (fp32, or the codec of hello), then
 *                     'pull'   {step}: all of step's chunks are pushed, send the weights when allowed
 *   server -> worker  WEIGHTS frames, one per chunk (fp32), then
 *                     'pulled' {step, staleness, lag, total}: the staleness this step's update had,
 *                              in steps, its lag in other workers' updates (server.ts), and the
 *                              worker steps the server has applied in all
 *   worker -> server  'fetch'  the current weights, without pushing (before the first step: a
 *                              worker starts from the servers' weights); WEIGHTS frames and
 *                              'fetched' {step} back
 *   worker -> server  'save'   {id, dir}: write this server's state to dir; 'saved' {id, path} back
 *                     'bye'    the worker is done: it pushes nothing more
 *   server -> worker  'error'  a typed error for this worker (bad input, a mismatch, a lost worker
 *                              in sync mode); the server closes the link after it
 *
 * Frames: DataHeader.seq = the chunk's key, .step = the worker's step (PUSH) or the server's clock
 * (WEIGHTS), .chunk = the operation (OP_*), .codec/.scale = the wire compression's.
 */
export const OP_PUSH = 1;
export const OP_INIT = 2;
export const OP_WEIGHTS = 3;

export type PsMode = 'sync' | 'async' | 'stale';
export const PS_MODES: readonly PsMode[] = ['sync', 'async', 'stale'];
export type PsCodec = 'none' | 'fp16' | 'bf16';
const CODECS: readonly PsCodec[] = ['none', 'fp16', 'bf16'];

/** The channel workers open to servers, and the store key a server publishes its address under. */
export const PS_CHANNEL = 'ps';
export const serverKey = (k: number): string => `ps/server/${k}`;
/** Bumped when the messages change shape: a worker and a server of different versions refuse each other. */
export const PS_PROTOCOL = 1;

/** Chunks one server may hold; workers and servers a job may have. */
export const MAX_CHUNKS = 1 << 16;
export const MAX_WORKERS = 1 << 14;
const MAX_PATH = 4096;
const MAX_CLASS_NAME = 128;

export interface HelloMsg {
  t: 'hello';
  protocol: number;
  rank: number;
  size: number;
  mode: PsMode;
  staleness: number;
  codec: PsCodec;
  keys: number[];
  lens: number[];
  restore?: string;
}
export interface InitMsg { t: 'init'; className: string; config: Record<string, unknown> }
export interface PullMsg { t: 'pull'; step: number }
export interface LrMsg { t: 'lr'; value: number }
export interface SaveMsg { t: 'save'; id: number; dir: string }
export interface FetchMsg { t: 'fetch' }
export interface ByeMsg { t: 'bye' }
export type ToServer = HelloMsg | InitMsg | PullMsg | LrMsg | SaveMsg | FetchMsg | ByeMsg;

export interface ReadyMsg { t: 'ready'; step: number }
export interface PulledMsg { t: 'pulled'; step: number; staleness: number; lag: number; total: number }
export interface SavedMsg { t: 'saved'; id: number; path: string }
export interface FetchedMsg { t: 'fetched'; step: number }
export interface ErrorMsg { t: 'error'; error: SerializedRingError }
export type ToWorker = ReadyMsg | PulledMsg | SavedMsg | FetchedMsg | ErrorMsg;

/** What a server publishes in the rendezvous store. */
export interface ServerRecord {
  host: string;
  port: number;
  server: number;
  servers: number;
  pid: number;
  hostname: string;
  tls: boolean;
  protocol: number;
}

const isInt = (v: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): v is number =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max;
const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);

function bad(m: Record<string, unknown>, from: string, what: string): RingProtocolError {
  return new RingProtocolError(`malformed ${peerValue(m.t)} message from ${from}: ${what}`);
}

function ints(v: unknown, max: number, min: number, maxValue: number): v is number[] {
  return Array.isArray(v) && v.length <= max && v.every((x) => isInt(x, min, maxValue));
}

/** A message a worker sent to a server, checked (RingProtocolError naming the field) and copied. */
export function validateToServer(m: Record<string, unknown>, from: string): ToServer {
  switch (m.t) {
    case 'hello': {
      if (!isInt(m.protocol)) throw bad(m, from, `protocol ${peerValue(m.protocol)}`);
      if (!isInt(m.size, 1, MAX_WORKERS) || !isInt(m.rank, 0, m.size - 1)) throw bad(m, from, `rank ${peerValue(m.rank)} of ${peerValue(m.size)}`);
      if (!PS_MODES.includes(m.mode as PsMode)) throw bad(m, from, `mode ${peerValue(m.mode)}`);
      if (!isInt(m.staleness, 0, 1 << 20)) throw bad(m, from, `staleness ${peerValue(m.staleness)}`);
      if (!CODECS.includes(m.codec as PsCodec)) throw bad(m, from, `codec ${peerValue(m.codec)}`);
      if (!ints(m.keys, MAX_CHUNKS, 0, 2 ** 32 - 1) || !ints(m.lens, MAX_CHUNKS, 0, 2 ** 30) || m.keys.length !== m.lens.length) {
        throw bad(m, from, 'keys / lens');
      }
      if (new Set(m.keys).size !== m.keys.length) throw bad(m, from, 'a key listed twice');
      if (m.restore !== undefined && (typeof m.restore !== 'string' || m.restore.length === 0 || m.restore.length > MAX_PATH)) throw bad(m, from, 'restore');
      const hello: HelloMsg = {
        t: 'hello',
        protocol: m.protocol,
        rank: m.rank,
        size: m.size,
        mode: m.mode as PsMode,
        staleness: m.staleness,
        codec: m.codec as PsCodec,
        keys: m.keys.slice(),
        lens: m.lens.slice(),
      };
      if (m.restore !== undefined) hello.restore = m.restore as string;
      return hello;
    }
    case 'init': {
      if (typeof m.className !== 'string' || m.className.length === 0 || m.className.length > MAX_CLASS_NAME) throw bad(m, from, `className ${peerValue(m.className)}`);
      if (!isRecord(m.config)) throw bad(m, from, 'config');
      // An optimizer's config is a few numbers and strings (learningRate, beta1, ...).
      const config: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(m.config)) {
        if (!(typeof v === 'number' || typeof v === 'boolean' || v === null || (typeof v === 'string' && v.length <= MAX_CLASS_NAME))) {
          throw bad(m, from, `config.${peerText(k, 64)} ${peerValue(v)}`);
        }
        config[k] = v;
      }
      return { t: 'init', className: m.className, config };
    }
    case 'pull':
      if (!isInt(m.step, 0, 2 ** 32 - 1)) throw bad(m, from, `step ${peerValue(m.step)}`);
      return { t: 'pull', step: m.step };
    case 'lr':
      if (typeof m.value !== 'number' || !Number.isFinite(m.value)) throw bad(m, from, `value ${peerValue(m.value)}`);
      return { t: 'lr', value: m.value };
    case 'save':
      if (!isInt(m.id) || typeof m.dir !== 'string' || m.dir.length === 0 || m.dir.length > MAX_PATH) throw bad(m, from, 'id / dir');
      return { t: 'save', id: m.id, dir: m.dir };
    case 'bye':
      return { t: 'bye' };
    case 'fetch':
      return { t: 'fetch' };
    default:
      throw new RingProtocolError(`unexpected message ${peerValue(m.t)} from ${from} (parameter-server protocol)`);
  }
}

/** A message a server sent to a worker, checked and copied. */
export function validateToWorker(m: Record<string, unknown>, from: string): ToWorker {
  switch (m.t) {
    case 'ready':
      if (!isInt(m.step, 0, 2 ** 32 - 1)) throw bad(m, from, `step ${peerValue(m.step)}`);
      return { t: 'ready', step: m.step };
    case 'pulled':
      if (!isInt(m.step, 0, 2 ** 32 - 1) || !isInt(m.staleness, 0, 2 ** 32 - 1) || !isInt(m.lag) || !isInt(m.total)) throw bad(m, from, 'step / staleness / lag / total');
      return { t: 'pulled', step: m.step, staleness: m.staleness, lag: m.lag, total: m.total };
    case 'fetched':
      if (!isInt(m.step, 0, 2 ** 32 - 1)) throw bad(m, from, `step ${peerValue(m.step)}`);
      return { t: 'fetched', step: m.step };
    case 'saved':
      if (!isInt(m.id) || typeof m.path !== 'string') throw bad(m, from, 'id / path');
      return { t: 'saved', id: m.id, path: peerText(m.path, MAX_PATH) };
    case 'error': {
      const e = m.error;
      if (!isRecord(e) || !isRingErrorCode(e.code) || typeof e.message !== 'string') throw bad(m, from, 'error');
      const details: RingErrorDetails = {};
      const d = isRecord(e.details) ? e.details : {};
      if (isInt(d.rank)) details.rank = d.rank;
      if (Array.isArray(d.ranks) && d.ranks.length <= MAX_WORKERS && d.ranks.every((r) => isInt(r))) details.ranks = (d.ranks as number[]).slice();
      if (isInt(d.server)) details.server = d.server;
      if (typeof d.field === 'string') details.field = peerText(d.field, 64);
      return { t: 'error', error: { code: e.code, message: peerText(e.message, 2000), details } };
    }
    default:
      throw new RingProtocolError(`unexpected message ${peerValue(m.t)} from ${from} (parameter-server protocol)`);
  }
}

/** A server's record read from the store, checked (a bad one is a rendezvous problem, named). */
export function checkServerRecord(v: unknown, k: number): ServerRecord | string {
  if (!isRecord(v)) return 'not a record';
  if (typeof v.host !== 'string' || v.host.length === 0 || v.host.length > 256 || !isInt(v.port, 1, 65535)) return `address ${peerValue(v.host)}:${peerValue(v.port)}`;
  if (v.server !== k || !isInt(v.servers, 1)) return `server ${peerValue(v.server)} of ${peerValue(v.servers)}`;
  if (v.protocol !== PS_PROTOCOL) return `protocol ${peerValue(v.protocol)} (this worker speaks ${PS_PROTOCOL}: is every process the same ringreduce version?)`;
  return {
    host: v.host,
    port: v.port,
    server: k,
    servers: v.servers,
    pid: isInt(v.pid) ? v.pid : 0,
    hostname: typeof v.hostname === 'string' ? peerText(v.hostname, 256) : '?',
    tls: v.tls === true,
    protocol: PS_PROTOCOL,
  };
}

/** The header of a frame, for messages. */
export const frameText = (h: DataHeader): string => `frame (op ${h.chunk}, key ${h.seq}, step ${h.step})`;

/**
 * A data frame's values as fp32: raw (`code` 0) or in the job's 16-bit codec, checked against the
 * chunk's `length`; or what is wrong with it (to follow "rank r sent"), and the field to name.
 */
export function decodeFrame(h: DataHeader, payload: Uint8Array, length: number, code: number, codec: PsCodec): Float32Array | { problem: string; field: string } {
  if (h.codec !== code) return { problem: `a ${frameText(h)} in wire format ${h.codec}, the job's is ${code}`, field: 'codec' };
  const out = new Float32Array(length);
  if (code === 0) {
    if (payload.byteLength !== length * 4) return { problem: `${payload.byteLength / 4} values for key ${h.seq} of ${length} (a wrong shape)`, field: 'shape' };
    new Uint8Array(out.buffer).set(payload);
    return out;
  }
  if (payload.byteLength !== length * 2) return { problem: `${payload.byteLength / 2} values for key ${h.seq} of ${length} (a wrong shape)`, field: 'shape' };
  if (!Number.isFinite(h.scale) || h.scale <= 0) return { problem: `scale ${h.scale} in a ${frameText(h)}`, field: 'scale' };
  // The codec reads 16-bit lanes: give it an aligned copy.
  const aligned = payload.byteOffset % 2 === 0 ? payload : payload.slice();
  codecFor(codec as 'fp16' | 'bf16')!.decode(out, aligned, h.scale);
  return out;
}
