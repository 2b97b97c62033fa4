import type { WebSocket } from 'ws';

/**
 * Payloads that land where they belong. ws assembles a message that spans several socket reads
 * (64 KiB each) by copying the pieces into a new buffer, and its owner then copies that buffer
 * to where the bytes belong: two copies of every large payload after the kernel's. Measured on
 * loopback, that extra pass was a third of a point-to-point transfer's time (a plain `net`
 * stream, with one copy, moved 1.5x the bytes per second).
 *
 * So a link that knows where the next message's bytes go (the payload of a data header: its
 * recv's array, see LinkHandlers.land) says so here, and the receiver's `consume` for exactly
 * that many bytes copies the socket's pieces straight into place and hands back a view of it.
 *
 * This reaches into ws 8's Receiver (`_receiver`, `consume`, `_buffers`, `_bufferedBytes`),
 * which ws has kept since 7.x; where they are not there, nothing is installed and every payload
 * takes ws's own path.
 */
interface WsReceiver {
  consume(n: number): Buffer;
  _buffers: Buffer[];
  _bufferedBytes: number;
}

/** Installs the landing consume on `ws`; returns the setter of the next landing place, or undefined. */
export function installLanding(ws: WebSocket): ((dst: Uint8Array | undefined) => void) | undefined {
  const r = (ws as unknown as { _receiver?: WsReceiver })._receiver;
  if (!r || typeof r.consume !== 'function' || !Array.isArray(r._buffers) || typeof r._bufferedBytes !== 'number') return undefined;
  const own = r.consume;
  let landing: Uint8Array | undefined;
  r.consume = function (this: WsReceiver, n: number): Buffer {
    const dst = landing;
    // Frame headers (2-14 bytes) and other messages go ws's way; landing places are >= 64 KiB.
    if (dst === undefined || n !== dst.byteLength || this._bufferedBytes < n) return own.call(this, n);
    landing = undefined;
    this._bufferedBytes -= n;
    for (let at = 0; at < n; ) {
      const buf = this._buffers[0];
      const take = Math.min(buf.length, n - at);
      dst.set(take === buf.length ? buf : buf.subarray(0, take), at);
      if (take === buf.length) this._buffers.shift();
      else this._buffers[0] = buf.subarray(take);
      at += take;
    }
    return Buffer.from(dst.buffer, dst.byteOffset, n);
  };
  return (dst) => {
    landing = dst;
  };
}
