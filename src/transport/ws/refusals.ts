import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { describeErrno } from '../fds.js';
import { gateOf } from './socket.js';

/** How long a refused client gets to answer our close frame before its connection is cut. */
const REFUSE_LINGER_MS = 500;

/**
 * Closes a connection we refuse (with `code`, e.g. 1008), without waiting the 30 s ws allows for
 * the client's half of the closing handshake: a stranger must not hold a socket open here.
 */
export function refuse(ws: WebSocket, code: number, reason: string): void {
  ws.close(code, reason);
  setTimeout(() => ws.terminate(), REFUSE_LINGER_MS).unref();
}

/** Refusals reported one by one each second; the others are counted into the next line. */
const REPORTS_PER_SECOND = 10;

/**
 * `report`, at most REPORTS_PER_SECOND times a second: a flood of strangers must not flood the
 * user's terminal. A refusal left out is counted, and the next line reported says how many.
 */
export function rateLimited(report: (peer: string, why: string) => void): (peer: string, why: string) => void {
  let second = 0;
  let count = 0;
  let untold = 0;
  return (peer, why) => {
    const now = Math.floor(Date.now() / 1000);
    if (now !== second) (second = now), (count = 0);
    if (++count > REPORTS_PER_SECOND) {
      untold++;
      return;
    }
    report(peer, untold > 0 ? `${why} (and ${untold} more refusals not shown)` : why);
    untold = 0;
  };
}

/**
 * Reports what a rank's or the store's WebSocket server turns away: a plain HTTP request (ws
 * answers 426), a malformed upgrade (400), bytes that are not HTTP at all (400), connections
 * the gate drops (no authentication in time, too many waiting, too much before authenticating:
 * see gate.ts). Returns the (rate-limited) reporter, for the refusals of the job-token handshake,
 * which the server reports itself. `failed(message)` hears of a server that cannot accept
 * connections (e.g. out of file descriptors).
 */
export function reportRefusals(
  server: WebSocketServer,
  refusedEach: (peer: string, why: string) => void,
  failed: (message: string) => void,
): (peer: string, why: string) => void {
  const refused = rateLimited(refusedEach);
  const peer = (s: { remoteAddress?: string; remotePort?: number }) => `${s.remoteAddress}:${s.remotePort}`;
  const badRequest = (socket: Duplex) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    socket.destroy();
  };
  const gate = gateOf(server);
  if (gate) gate.onDrop = refused;
  // With a listener, ws leaves answering a bad upgrade to us.
  server.on('wsClientError', (err: Error, socket: Duplex, req: IncomingMessage) => {
    refused(peer(req.socket), `invalid WebSocket upgrade (${err.message})`);
    badRequest(socket);
  });
  const http = (server as unknown as { _server?: Server })._server;
  http?.on('request', (req: IncomingMessage) => {
    refused(peer(req.socket), `a plain HTTP ${req.method} request, not a WebSocket upgrade (answered 426)`);
  });
  // Replaces Node's default handling (400, then close), so it must do the same.
  http?.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const why =
      err.code === 'ECONNRESET'
        ? 'the client reset the connection before sending a request'
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? 'no request within the time limit'
          : `not an HTTP request (${err.code ?? err.message})`;
    refused(peer(socket as unknown as { remoteAddress?: string; remotePort?: number }), why);
    badRequest(socket);
  });
  // After it listens, a server's errors are its accept()'s: say so (unheard, one would end the process).
  server.on('error', (e: NodeJS.ErrnoException) => failed(`cannot accept connections: ${describeErrno(e)}`));
  return refused;
}
