import type { Link } from './link.js';

/**
 * The transport boundary (NCCL's `struct ncclTransport`, Gloo's `transport/pair.h`): a way to
 * open authenticated links between ranks. Everything above it — the ring, groups, point-to-point
 * — asks for a link to a rank on a channel, never for a socket. Implementations: `ws/` (WebSocket
 * with the job token's handshake, TLS, and same-host shared memory for payloads, `shm/`) and
 * `memory.ts` (in-process, for tests). A new transport, or a native receive path, is one new
 * folder that implements these two calls.
 */
export interface PeerAddress {
  host: string;
  port: number;
  /** The peer's process id (its rendezvous record has it): for single-copy reads on one host. */
  pid?: number;
  /**
   * False when the peer runs on another host key than this rank (another boot, or another network
   * namespace: see machineKey): links to it then keep their payloads on the socket even where both
   * could map the same /dev/shm, as network namespaces of one machine can. Undefined: not known
   * (the shared-memory offer then decides by itself).
   */
  sameHost?: boolean;
}

/** Who decides about the links other ranks open to this one. */
export interface Acceptor {
  /** Why `peer` may not open a link on `channel` here, or undefined if it may. */
  admit(peer: number, channel: string): string | undefined;
  /** A link that was admitted and authenticated. */
  accepted(peer: number, channel: string, link: Link): void;
  /** How errors name the peer of such a link, e.g. 'right neighbour' (default: the channel). */
  label?(peer: number, channel: string): string;
}

export interface Listener {
  /** Where other ranks reach this one (published in the rendezvous record). */
  readonly address: PeerAddress;
  close(): Promise<void>;
}

export interface Transport {
  /** Starts accepting links; each admitted, authenticated one goes to `acceptor`. */
  listen(acceptor: Acceptor): Promise<Listener>;
  /**
   * Opens a link to `peer` at `at` on `channel`, retrying refused connections until `deadline`
   * (ms since epoch). `label` names the peer in errors ('left neighbour', 'p2p link').
   */
  connect(peer: number, at: PeerAddress, channel: string, deadline: number, label: string): Promise<Link>;
}
