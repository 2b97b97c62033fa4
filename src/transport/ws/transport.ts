import type { WebSocket } from 'ws';
import type { Logger } from '../../logger.js';
import { peerValue } from '../../peer-text.js';
import type { Acceptor, Listener, PeerAddress, Transport } from '../transport.js';
import { connectAuthenticated, serverHandshake } from './auth.js';
import { droppedByGate } from './gate.js';
import { Inbox } from './inbox.js';
import { WsLink } from './link.js';
import { refuse, reportRefusals } from './refusals.js';
import { channelOf, channelPath, closeWsServer, listen, netServer, type TlsConfig } from './socket.js';

const HANDSHAKE_MS = 10_000;

/** The MAC names the channel too, so a connection cannot be replayed onto another channel. */
const serverId = (rank: number, channel: string) => (channel === 'ring' ? `rank:${rank}` : `rank:${rank}/${channel}`);

export interface WsTransportOptions {
  rank: number;
  token: string;
  /** The address this rank listens on (and advertises). */
  host: string;
  /** Largest message a link accepts (a frame of chunkBytes, its header, and room for control). */
  maxPayload: number;
  tls?: TlsConfig;
  logger: Logger;
}

/**
 * Links over WebSockets: one listening port per rank; a connection names its channel in the URL
 * path ('/' is the ring's, '/c/<name>' any other), and runs the job token's HMAC handshake,
 * whose MAC covers the channel, before it becomes a link (see auth.ts).
 */
export class WsTransport implements Transport {
  constructor(private readonly o: WsTransportOptions) {}

  async listen(acceptor: Acceptor): Promise<Listener> {
    const { rank, logger } = this.o;
    const { server, endpoint } = await listen(this.o.host, 0, this.o.maxPayload, this.o.tls);
    netServer(server)?.unref();
    const refused = reportRefusals(
      server,
      (peer, why) => logger.warn(`rank ${rank}: refused a connection from ${peer}: ${why}`),
      (message) => logger.warn(`rank ${rank}: its port ${endpoint.port} ${message}`),
    );
    server.on('connection', (ws: WebSocket, req) => {
      const peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
      const channel = channelOf(req.url);
      if (channel === undefined) {
        refused(peer, `unknown path ${peerValue(req.url)}`);
        return refuse(ws, 1008, 'refused');
      }
      const inbox = new Inbox(ws);
      serverHandshake(inbox, {
        token: this.o.token,
        serverId: serverId(rank, channel),
        challenge: { rank, role: 'rank' },
        admit: (r) => acceptor.admit(r, channel),
        timeoutMs: HANDSHAKE_MS,
        peer: `connection from ${peer}`,
      }).then(
        (r) => acceptor.accepted(r, channel, new WsLink(r, `rank ${r} (${acceptor.label?.(r, channel) ?? `${channel} link`}, ${peer})`, inbox)),
        (e: Error) => {
          if (droppedByGate(ws)) return; // reported by the gate
          refused(peer, e.message);
          refuse(ws, 1008, 'refused');
        },
      );
    });
    return { address: endpoint, close: () => closeWsServer(server) };
  }

  async connect(peer: number, at: PeerAddress, channel: string, deadline: number, label: string): Promise<WsLink> {
    const where = `${at.host}:${at.port}`;
    const inbox = await connectAuthenticated(at, this.o.maxPayload, deadline, `rank ${peer}`, this.o.tls, channelPath(channel), {
      token: this.o.token,
      rank: this.o.rank,
      serverId: serverId(peer, channel),
      timeoutMs: HANDSHAKE_MS,
      peer: `rank ${peer} at ${where}`,
    });
    return new WsLink(peer, `rank ${peer} (${label}, ${where})`, inbox);
  }
}
