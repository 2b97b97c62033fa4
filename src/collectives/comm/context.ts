import { wireBytesPerElement } from '../../compression/registry.js';
import { dtypeByCode } from '../../dtypes.js';
import type { RingError } from '../../errors.js';
import type { OpContext, RingPlace } from '../collective.js';
import type { OpDescriptor } from '../descriptor.js';
import type { OpState } from './op-table.js';
import type { SendQueue } from './send-queue.js';

/** What an operation's context needs of its communicator: the ways an operation ends. */
export interface ContextHost {
  /** Settles `st` if it has everything it waits for. */
  maybeComplete(st: OpState): void;
  /** Ends `st` with an error that concerns it alone (the ring stays usable). */
  settle(st: OpState, error: RingError): void;
  /** Fails the ring (see Communicator.fatal). */
  fatal(error: RingError): void;
}

/**
 * The OpContext a collective runs with (collective.ts) for operation `st`, whose descriptor is
 * `desc`: this rank's place, the elements per frame for its dtype and compression, the table of
 * descriptors, its frames to the right through `sends` (each counted on the operation until it
 * left), and the `elsewhere` hook of a collective whose data moves on other communicators.
 */
export function opContext(place: RingPlace, st: OpState, desc: OpDescriptor, chunkBytes: number, sends: SendQueue, host: ContextHost): OpContext {
  const seq = st.seq;
  // A frame carries chunkBytes on the wire (see wireBytesPerElement).
  const wireBytes = wireBytesPerElement(desc.compression, dtypeByCode(desc.dtype)?.bytes ?? 1);
  const chunkElems = desc.dtype ? Math.max(1, Math.floor(chunkBytes / wireBytes)) : 1;
  return {
    rank: place.rank,
    size: place.size,
    left: place.left,
    right: place.right,
    chunkElems,
    descriptors: st.table.descs,
    inline: st.table.inline,
    send: (step, chunk, payload, codec = 0, scale = 1) => sends.enqueue(st, { seq, step, chunk, codec, scale }, payload),
    sendFilled: (step, chunk, bytes, codec, fill) => sends.enqueue(st, { seq, step, chunk, codec, scale: 1 }, { bytes, fill }),
    // Without a deadline of its own: the operations elsewhere have theirs (see OpContext.elsewhere).
    elsewhere: () => {
      st.elsewhere = true;
      st.deadline = 0;
      return (error, fatal) => {
        if (!st.elsewhere) return;
        st.elsewhere = false;
        if (!error) host.maybeComplete(st);
        else if (fatal) host.fatal(error);
        else host.settle(st, error);
      };
    },
  };
}
