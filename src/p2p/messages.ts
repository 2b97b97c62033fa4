import { dtypeByCode, MAX_ELEMENTS } from '../dtypes.js';
import { RingProtocolError } from '../errors.js';
import { peerValue } from '../peer-text.js';

/**
 * The point-to-point protocol, on a link that the SENDING rank opened (see transport/mesh.ts).
 *
 *   sender -> receiver   'msg'  one send: context, tag, id (per link), dtype, count, and for a
 *                               small send within the eager credit its bytes (`p`)
 *   receiver -> sender   'ack'  an eager send was matched by a recv and copied: the send resolves,
 *                               its bytes return to the credit
 *                        'cts'  a large send was matched (clear to send): its data frames follow,
 *                               DataHeader.seq = id, .chunk = index of a chunkBytes piece
 *                        'nak'  the matching recv wants another dtype or count: both fail
 *                        'got'  a large send on the same host was matched and copied straight
 *                               out of the sender's memory (its 'msg' said where: `a`)
 *   sender -> receiver   'drop' a send's deadline passed: the receiver forgets it unless a recv
 *                               took it already (then its answer is on the way, and stands)
 *   receiver -> sender   'dropped' it was forgotten: only now does the send fail. Failing it at
 *                               once would hand the caller back an array that a recv posted a
 *                               moment later could still read (or copy out of the sender's memory)
 *
 * So a send resolves only once a recv took it (like Gloo's, whose sender waits for the
 * receiver's "ready"), which is also what lets a mismatch fail on both ranks. Unmatched data
 * never piles up: the eager bytes a sender may have outstanding are capped (EAGER_CREDIT), and
 * large sends move nothing before their recv exists.
 */
export interface P2PMsg {
  t: 'msg';
  /** Which communicator (world, a group, a collective's internal traffic) this belongs to. */
  c: string;
  tag: number;
  id: number;
  dt: number;
  n: number;
  p?: Uint8Array;
  /**
   * A large send to a rank of the same host: where its bytes are in the sender, so the receiver
   * may copy them out in one go (peerRead) and answer 'got' instead of 'cts'.
   */
  a?: number;
}
export interface P2PAck { t: 'ack'; id: number }
export interface P2PCts { t: 'cts'; id: number }
export interface P2PNak { t: 'nak'; id: number; dt: number; n: number }
export interface P2PGot { t: 'got'; id: number }
/** The sender's deadline for send `id` passed: unless a recv took it already, it is to be forgotten. */
export interface P2PDrop { t: 'drop'; id: number }
/** The receiver forgot send `id` (no recv had taken it): the sender may now fail it. */
export interface P2PDropped { t: 'dropped'; id: number }
export type P2PControl = P2PMsg | P2PAck | P2PCts | P2PNak | P2PGot | P2PDrop | P2PDropped;

/** Sends of at most this many bytes carry their data in their 'msg' (one message, no round trip first). */
export const EAGER_BYTES = 64 * 1024;
/** Eager bytes a sender may have sent to one peer and not yet seen matched. */
export const EAGER_CREDIT = 1024 * 1024;
/** Sends to one peer announced and not yet matched; later ones wait on the sender. */
export const MAX_UNMATCHED = 1024;

const isId = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Shape checks for what arrives on a point-to-point link (a malformed message is a protocol error). */
export function validateP2P(m: Record<string, unknown>, from: string): P2PControl {
  const bad = (what: string) => new RingProtocolError(`malformed point-to-point ${peerValue(m.t)} message from ${from}: ${what}`);
  switch (m.t) {
    case 'msg': {
      if (typeof m.c !== 'string' || m.c.length > 256) throw bad(`context ${peerValue(m.c)}`);
      if (!isId(m.tag) || !isId(m.id) || !isId(m.n) || m.n > MAX_ELEMENTS) throw bad(`tag ${peerValue(m.tag)} / id ${peerValue(m.id)} / count ${peerValue(m.n)}`);
      if (!isId(m.dt) || dtypeByCode(m.dt) === undefined) throw bad(`dtype code ${peerValue(m.dt)}`);
      if (m.p !== undefined && !(m.p instanceof Uint8Array && m.p.byteLength <= EAGER_BYTES)) throw bad(`payload ${peerValue(m.p)}`);
      if (m.a !== undefined && (!isId(m.a) || m.a === 0 || m.p !== undefined)) throw bad('address');
      const msg: P2PMsg = { t: 'msg', c: m.c, tag: m.tag, id: m.id, dt: m.dt, n: m.n };
      if (m.p !== undefined) msg.p = m.p as Uint8Array;
      if (m.a !== undefined) msg.a = m.a as number;
      return msg;
    }
    case 'ack':
    case 'cts':
    case 'got':
    case 'drop':
    case 'dropped':
      if (!isId(m.id)) throw bad('id');
      return { t: m.t, id: m.id };
    case 'nak':
      if (!isId(m.id) || !isId(m.dt) || !isId(m.n) || m.n > MAX_ELEMENTS) throw bad(`id ${peerValue(m.id)} / dtype ${peerValue(m.dt)} / count ${peerValue(m.n)}`);
      return { t: 'nak', id: m.id, dt: m.dt, n: m.n };
    default:
      throw new RingProtocolError(`unexpected point-to-point message ${peerValue(m.t)} from ${from}`);
  }
}
