import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';

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

/**
 * Reports what a rank's or the store's WebSocket server turns away before any WebSocket exists:
 * a plain HTTP request (ws answers 426), a malformed upgrade (400), bytes that are not HTTP at all
 * (400), a client that sends no request in time. Refusals after the upgrade (the job-token
 * handshake) are reported where the handshake runs. `refused(peer, why)` gets each one.
 */
export function reportRefusals(server: WebSocketServer, refused: (peer: string, why: string) => void): void {
  const peer = (s: { remoteAddress?: string; remotePort?: number }) => `${s.remoteAddress}:${s.remotePort}`;
  const badRequest = (socket: Duplex) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    socket.destroy();
  };
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
}
