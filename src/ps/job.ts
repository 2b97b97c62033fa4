import { isAbsolute } from 'node:path';
import { RingInvalidArgError, RingMismatchError } from '../errors.js';
import { peerText } from '../peer-text.js';
import { PS_PROTOCOL, type HelloMsg } from './messages.js';

/** What every worker of a job must agree on with a server, fixed by the first hello it gets. */
export interface Job {
  size: number;
  mode: HelloMsg['mode'];
  staleness: number;
  codec: HelloMsg['codec'];
  /** key -> length, the chunks this server holds. */
  chunks: Map<number, number>;
  keys: number[];
  first: number;
  restore?: string;
}

/**
 * The job after rank `rank`'s hello: made from it if it is the first, else checked against it
 * (RingMismatchError naming the field and the first rank). `name` and `server` name the server in
 * errors. Rank 0's hello may carry the checkpoint to restore.
 */
export function agreeOnJob(job: Job | undefined, m: HelloMsg, rank: number, name: string, server: number): Job {
  if (m.protocol !== PS_PROTOCOL) {
    throw new RingMismatchError(`${name} speaks protocol ${PS_PROTOCOL}, rank ${rank} speaks ${m.protocol}: is every process the same ringreduce version?`, {
      server,
      rank,
      field: 'protocol',
    });
  }
  let j = job;
  if (!j) {
    const chunks = new Map(m.keys.map((k, i) => [k, m.lens[i]]));
    j = { size: m.size, mode: m.mode, staleness: m.staleness, codec: m.codec, chunks, keys: [...chunks.keys()], first: rank };
  } else {
    const first = j.first;
    const differ = (field: string, mine: unknown, theirs: unknown) =>
      new RingMismatchError(`${name}: rank ${rank} says ${field} ${JSON.stringify(mine)}, rank ${first} said ${JSON.stringify(theirs)}: every worker must use the same`, {
        server,
        rank,
        ranks: [first],
        field,
      });
    if (m.size !== j.size) throw differ('size (workers)', m.size, j.size);
    if (m.mode !== j.mode) throw differ('parameterServer.mode', m.mode, j.mode);
    if (m.staleness !== j.staleness) throw differ('parameterServer.staleness', m.staleness, j.staleness);
    if (m.codec !== j.codec) throw differ('compression', m.codec, j.codec);
    const chunks = j.chunks;
    const same = m.keys.length === chunks.size && m.keys.every((k, i) => chunks.get(k) === m.lens[i]);
    if (!same) throw differ('model (chunks of this server)', `${m.keys.length} chunks`, `${chunks.size} chunks`);
  }
  if (rank === 0 && m.restore) {
    if (!isAbsolute(m.restore)) throw new RingInvalidArgError(`${name}: parameterServer.restore must be an absolute directory, got '${peerText(m.restore, 300)}'`, { server, field: 'restore' });
    j.restore = m.restore;
  }
  return j;
}
