import { readdirSync, readFileSync } from 'node:fs';
import { connect as tcpConnect, type Socket } from 'node:net';

/**
 * A stranger on the network, by hand (raw TCP, so it can do what no WebSocket client would), and
 * what it costs the process it attacks, read from /proc.
 */

/** A TCP connection that sends nothing; `closed` resolves when the server ends it. */
export function idle(port: number, host = '127.0.0.1'): Promise<{ socket: Socket; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(port, host);
    const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now())));
    socket.on('error', () => {}); // a reset is how some are closed
    socket.once('connect', () => resolve({ socket, closed }));
    socket.once('close', () => reject(new Error(`connection to ${host}:${port} failed`)));
  });
}

/**
 * A WebSocket upgrade written by hand; resolves once the server answered it (101: `ok`), with
 * the socket and whatever the server sent after its answer, as it comes (`after`).
 */
export function upgrade(port: number, host = '127.0.0.1'): Promise<{ socket: Socket; ok: boolean; after: Buffer[]; closed: Promise<number> }> {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, host);
    const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now())));
    socket.on('error', () => {});
    socket.once('connect', () =>
      socket.write(
        `GET / HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      ),
    );
    let head = Buffer.alloc(0);
    const after: Buffer[] = [];
    let answered = false;
    socket.on('data', (d: Buffer) => {
      if (answered) return void after.push(d);
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      answered = true;
      if (end + 4 < head.length) after.push(head.subarray(end + 4));
      resolve({ socket, ok: head.toString('latin1').startsWith('HTTP/1.1 101'), after, closed });
    });
    socket.once('close', () => {
      if (!answered) resolve({ socket, ok: false, after, closed });
    });
  });
}

/** The header of a masked client frame (binary, final; mask all zero) for `n` payload bytes. */
export function frameHeader(n: number): Buffer {
  const b = Buffer.alloc(14);
  b[0] = 0x82;
  b[1] = 0x80 | 127;
  b.writeBigUInt64BE(BigInt(n), 2);
  return b;
}

/** A whole client frame carrying `payload`. */
export const frame = (payload: Buffer): Buffer => Buffer.concat([frameHeader(payload.length), payload]);

/** The close code in the server frames of `chunks`, if a close frame is there. */
export function closeCodeIn(chunks: Buffer[]): number | undefined {
  const b = Buffer.concat(chunks);
  for (let i = 0; i + 2 <= b.length; ) {
    const op = b[i] & 0x0f;
    let len = b[i + 1] & 0x7f;
    i += 2;
    if (len === 126) (len = b.readUInt16BE(i)), (i += 2);
    else if (len === 127) (len = Number(b.readBigUInt64BE(i))), (i += 8);
    if (op === 0x8) return len >= 2 && i + 2 <= b.length ? b.readUInt16BE(i) : 1005;
    i += len;
  }
  return undefined;
}

/** Resident memory of `pid`, MB. */
export function rssMB(pid: number): number {
  const kb = Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  return kb / 1024;
}

/** CPU time (user + system) `pid` has used, ms (clock ticks of 10 ms). */
export function cpuMs(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** Open file descriptors of `pid`. */
export const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;
