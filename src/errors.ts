/**
 * Every error ringreduce raises is a RingError with a stable `code`.
 *
 * Recoverable conditions (a peer went away, a timeout, ranks that disagree, bad arguments) have
 * their own classes; RingInternalError marks an invariant violation, i.e. a bug in ringreduce.
 */
export type RingErrorCode =
  | 'RING_ERR_INVALID_ARG'
  | 'RING_ERR_NOT_INITIALIZED'
  | 'RING_ERR_MISMATCH'
  | 'RING_ERR_TIMEOUT'
  | 'RING_ERR_PEER_LOST'
  | 'RING_ERR_AUTH'
  | 'RING_ERR_PROTOCOL'
  | 'RING_ERR_RENDEZVOUS'
  | 'RING_ERR_SHUTDOWN'
  | 'RING_ERR_TFJS_COPY'
  | 'RING_ERR_INTERNAL';

export interface RingErrorDetails {
  /** The rank that raised the error. */
  rank?: number;
  /** Other ranks involved (the lost peer, the ranks that disagree, the ranks missing). */
  ranks?: number[];
  /** The collective, e.g. 'allreduce'. */
  op?: string;
  /** The collective's sequence number on this communicator. */
  seq?: number;
  /** For mismatches: the field that differs. */
  field?: string;
  /** The parameter server involved (its index: servers are not ranks of the workers' world). */
  server?: number;
}

export class RingError extends Error {
  readonly code: RingErrorCode;
  readonly details: RingErrorDetails;
  constructor(code: RingErrorCode, message: string, details: RingErrorDetails = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.details = details;
  }
  override get name(): string {
    return this.constructor.name;
  }
}

export class RingInvalidArgError extends RingError {
  constructor(message: string, details?: RingErrorDetails) {
    super('RING_ERR_INVALID_ARG', message, details);
  }
}
export class RingNotInitializedError extends RingError {
  constructor(what: string) {
    super('RING_ERR_NOT_INITIALIZED', `${what}() called before init(); call 'await init()' first`);
  }
}
export class RingMismatchError extends RingError {
  constructor(message: string, details: RingErrorDetails) {
    super('RING_ERR_MISMATCH', message, details);
  }
}
export class RingTimeoutError extends RingError {
  constructor(message: string, details: RingErrorDetails) {
    super('RING_ERR_TIMEOUT', message, details);
  }
}
export class RingPeerLostError extends RingError {
  constructor(message: string, details: RingErrorDetails, options?: { cause?: unknown }) {
    super('RING_ERR_PEER_LOST', message, details, options);
  }
}
export class RingAuthError extends RingError {
  constructor(message: string, details?: RingErrorDetails) {
    super('RING_ERR_AUTH', message, details);
  }
}
export class RingProtocolError extends RingError {
  constructor(message: string, details?: RingErrorDetails) {
    super('RING_ERR_PROTOCOL', message, details);
  }
}
export class RingRendezvousError extends RingError {
  constructor(message: string, details?: RingErrorDetails, options?: { cause?: unknown }) {
    super('RING_ERR_RENDEZVOUS', message, details, options);
  }
}
export class RingShutdownError extends RingError {
  constructor(message: string, details?: RingErrorDetails) {
    super('RING_ERR_SHUTDOWN', message, details);
  }
}
/** The application's TensorFlow.js objects come from another copy of tfjs than the one ringreduce loaded. */
export class RingTfjsCopyError extends RingError {
  constructor(message: string, details?: RingErrorDetails) {
    super('RING_ERR_TFJS_COPY', message, details);
  }
}
export class RingInternalError extends RingError {
  constructor(message: string, details?: RingErrorDetails) {
    super('RING_ERR_INTERNAL', `internal error (a bug in ringreduce): ${message}`, details);
  }
}

/** A serialisable form, so an error raised on one rank or thread can be re-raised on another. */
export interface SerializedRingError {
  code: RingErrorCode;
  message: string;
  details: RingErrorDetails;
}

const byCode: Record<RingErrorCode, new (message: string, details: RingErrorDetails) => RingError> = {
  RING_ERR_INVALID_ARG: RingInvalidArgError,
  RING_ERR_NOT_INITIALIZED: class extends RingError {
    constructor(m: string, d: RingErrorDetails) { super('RING_ERR_NOT_INITIALIZED', m, d); }
  },
  RING_ERR_MISMATCH: RingMismatchError,
  RING_ERR_TIMEOUT: RingTimeoutError,
  RING_ERR_PEER_LOST: RingPeerLostError,
  RING_ERR_AUTH: RingAuthError,
  RING_ERR_PROTOCOL: RingProtocolError,
  RING_ERR_RENDEZVOUS: RingRendezvousError,
  RING_ERR_SHUTDOWN: RingShutdownError,
  RING_ERR_TFJS_COPY: RingTfjsCopyError,
  RING_ERR_INTERNAL: class extends RingError {
    constructor(m: string, d: RingErrorDetails) { super('RING_ERR_INTERNAL', m, d); }
  },
};

export function serializeError(e: RingError): SerializedRingError {
  return { code: e.code, message: e.message, details: e.details };
}

/** True for the codes above (own keys only: 'constructor' or '__proto__' are not codes). */
export function isRingErrorCode(code: unknown): code is RingErrorCode {
  return typeof code === 'string' && Object.hasOwn(byCode, code);
}

export function deserializeError(s: SerializedRingError): RingError {
  const Ctor = isRingErrorCode(s.code) ? byCode[s.code] : byCode.RING_ERR_INTERNAL;
  return new Ctor(String(s.message), s.details ?? {});
}
