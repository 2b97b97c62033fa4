import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { WebSocket, WebSocketServer } from 'ws';
import { RingAuthError, RingRendezvousError } from '../../errors.js';
import { describeErrno, fdShortage, isFdExhaustion } from '../fds.js';
import { Gate, PENDING_MS } from './gate.js';
import { Inbox } from './inbox.js';

/**
 * WebSocket plumbing shared by ring links and the rendezvous store.
 *
 * Client frames use an all-zero mask: ws then skips the XOR pass over every payload byte (RFC 6455
 * masking exists for browsers behind proxies; both ends here are authenticated ranks).
 */
export const zeroMask = (mask: Buffer): void => {
  mask.fill(0);
};

export interface Endpoint {
  host: string;
  port: number;
}

/**
 * TLS for links that leave the host (wss://): this side's PEM certificate and key, and the CA both
 * sides verify the other against. With a CA, servers require a client certificate signed by it
 * (mutual TLS); certificates are checked against the CA only, not against host names, because
 * ranks are addressed by IP and identified by the job token's handshake, which still runs inside.
 */
export interface TlsConfig {
  cert: string;
  key: string;
  ca?: string;
}

/** TLS servers made by listen(): ws does not close a server it was handed, closeServer() must. */
const ownedServers = new WeakMap<WebSocketServer, HttpsServer>();
/** Every server's connections that have not authenticated yet (see gate.ts). */
const gates = new WeakMap<WebSocketServer, Gate>();

export const formatHost = (host: string): string => (host.includes(':') ? `[${host}]` : host);

export function wsUrl(e: Endpoint, tls?: TlsConfig, path = '/'): string {
  return `${tls ? 'wss' : 'ws'}://${formatHost(e.host)}:${e.port}${path}`;
}

/** The URL path of a link on a mesh channel (see transport/mesh.ts); '/' is the ring's own link. */
export const channelPath = (channel: string): string => (channel === 'ring' ? '/' : `/c/${channel}`);

/** The channel a connection's URL path names: 'ring' for '/', undefined for anything else unknown. */
export function channelOf(url: string | undefined): string | undefined {
  if (url === '/' || url === undefined || url === '') return 'ring';
  return url.startsWith('/c/') ? url.slice(3) : undefined;
}

/** Starts a WebSocket server (wss:// with `tls`); resolves once it listens (port 0 = ephemeral). */
export function listen(host: string, port: number, maxPayload: number, tls?: TlsConfig): Promise<{ server: WebSocketServer; endpoint: Endpoint }> {
  return new Promise((resolve, reject) => {
    let server: WebSocketServer;
    if (tls) {
      const https = createHttpsServer({
        cert: tls.cert,
        key: tls.key,
        ca: tls.ca,
        requestCert: tls.ca !== undefined,
        // Checked in verifyClient instead, so that a refused client hears why (HTTP 403) rather
        // than a bare reset, and does not retry until its deadline.
        rejectUnauthorized: false,
        minVersion: 'TLSv1.2',
      });
      const verifyClient = (info: { req: IncomingMessage }, done: (ok: boolean, code?: number, message?: string) => void) => {
        const sock = info.req.socket as TLSSocket;
        if (tls.ca === undefined || sock.authorized) return done(true);
        done(false, 403, `TLS client certificate refused: ${String(sock.authorizationError ?? 'none presented')}`);
      };
      server = new WebSocketServer({ server: https, maxPayload, perMessageDeflate: false, clientTracking: true, verifyClient });
      ownedServers.set(server, https);
      https.on('error', (e) => server.emit('error', e));
      https.listen(port, host);
    } else {
      server = new WebSocketServer({ host, port, maxPayload, perMessageDeflate: false, clientTracking: true });
    }
    // Before anyone else hears of a connection, the gate does: from its TCP accept, and its upgrade.
    const tcp = ownedServers.get(server) ?? (server as unknown as { _server?: NetServer })._server;
    if (tcp) {
      const gate = new Gate(tcp);
      gates.set(server, gate);
      server.on('connection', (ws: WebSocket, req: IncomingMessage) => gate.upgraded(ws, req.socket as Socket));
    }
    const onError = (e: Error) => reject(new RingRendezvousError(`cannot listen on ${formatHost(host)}:${port}: ${describeErrno(e)}`, {}, { cause: e }));
    server.once('error', onError);
    server.once('listening', () => {
      server.off('error', onError);
      const a = server.address() as AddressInfo;
      resolve({ server, endpoint: { host, port: a.port } });
    });
  });
}

/** The gate of a server made by listen(). */
export const gateOf = (server: WebSocketServer): Gate | undefined => gates.get(server);

/**
 * Closes a server made by listen(), including its TLS server, at once: connections that have not
 * authenticated (a stranger's idle socket) are destroyed rather than waited for.
 */
export function closeWsServer(server: WebSocketServer): Promise<void> {
  gates.get(server)?.closeAll();
  for (const c of server.clients) c.terminate();
  const https = ownedServers.get(server);
  return new Promise((resolve) =>
    server.close(() => {
      if (!https) return resolve();
      https.closeAllConnections();
      https.close(() => resolve());
    }),
  );
}

/** The listening socket of a server made by listen(), e.g. to unref() it. */
export function netServer(server: WebSocketServer): { unref(): void } | undefined {
  return ownedServers.get(server) ?? (server as unknown as { _server?: { unref(): void } })._server;
}

/** How long connect() retries while this process is out of file descriptors. */
const FD_GRACE_MS = PENDING_MS + 1000;

/** TLS errors that no retry can fix: a certificate the other side does not trust, or none. */
function isTlsRefusal(err: unknown): boolean {
  const code = String((err as { code?: unknown })?.code ?? '');
  return /^ERR_SSL_|^ERR_TLS_|CERT|^UNABLE_TO_|SELF_SIGNED/.test(code);
}

/** Opens a WebSocket (wss:// with `tls`), retrying refused connections until `deadline` (ms since epoch). */
export async function connect(e: Endpoint, maxPayload: number, deadline: number, what: string, tls?: TlsConfig, path = '/'): Promise<Inbox> {
  let delay = 20;
  let outOfFdsSince: number | undefined;
  for (;;) {
    try {
      return await new Promise<Inbox>((resolve, reject) => {
        const ws = new WebSocket(wsUrl(e, tls, path), {
          maxPayload,
          perMessageDeflate: false,
          generateMask: zeroMask,
          handshakeTimeout: Math.max(1000, deadline - Date.now()),
          ...(tls && {
            cert: tls.cert,
            key: tls.key,
            ca: tls.ca,
            rejectUnauthorized: true,
            // Trust is the CA's signature (see TlsConfig), not the name in the certificate.
            // (Node's tls calls it and wants undefined for "fine"; @types/ws says boolean.)
            checkServerIdentity: (() => undefined) as unknown as () => boolean,
          }),
        });
        ws.binaryType = 'nodebuffer';
        const inbox = new Inbox(ws);
        ws.once('open', () => {
          ws.off('error', reject);
          resolve(inbox);
        });
        ws.once('error', reject);
      });
    } catch (err) {
      // Out of file descriptors (this process: no socket, or its own server dropping connections
      // unseen, see fds.ts): retried a little, as strangers' pending connections free theirs
      // within PENDING_MS (gate.ts), then an error that says so, long before the deadline.
      const short = isFdExhaustion(err) ? describeErrno(err as Error) : fdShortage();
      if (short === undefined) outOfFdsSince = undefined;
      else if (Date.now() - (outOfFdsSince ??= Date.now()) >= FD_GRACE_MS) {
        const why = isFdExhaustion(err) ? short : `${(err as Error).message} (${short})`;
        throw new RingRendezvousError(`cannot connect to ${what} at ${wsUrl(e, tls)}: ${why}`, {}, { cause: err });
      }
      if (isTlsRefusal(err)) {
        throw new RingAuthError(`TLS handshake with ${what} at ${wsUrl(e, tls)} failed: ${(err as Error).message} (are both certificates signed by the job's CA?)`);
      }
      if (tls && /Unexpected server response: 403/.test((err as Error).message)) {
        throw new RingAuthError(`${what} at ${wsUrl(e, tls)} refused our TLS client certificate (is it signed by the job's CA, RINGREDUCE_TLS_CA?)`);
      }
      // Give up only once the deadline has passed (a last try at the deadline itself): giving up
      // when the next retry would pass it failed up to one retry delay (500 ms) early, so a rank
      // reported the store missing before the start timeout it names.
      const left = deadline - Date.now();
      if (left <= 0) {
        // A TLS server answering a plain client just hangs up.
        const hint =
          short !== undefined
            ? ` (${short})`
            : !tls && /socket hang up/.test((err as Error).message)
              ? ' (does the other side use TLS? then set RINGREDUCE_TLS_CERT/_KEY/_CA here too)'
              : '';
        throw new RingRendezvousError(`cannot connect to ${what} at ${wsUrl(e, tls)}: ${(err as Error).message}${hint}`, {}, { cause: err });
      }
      await new Promise((r) => setTimeout(r, Math.min(delay, left)));
      delay = Math.min(delay * 2, 500);
    }
  }
}

