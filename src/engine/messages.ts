import type { StoreAddress } from '../env.js';
import type { SerializedRingError } from '../errors.js';
import type { ResolvedOptions } from '../options.js';
import type { GroupMeta } from './plan.js';
import type { PsSetup, StepInfo } from '../ps/client.js';

/** Messages between the main thread and the comm worker, as discriminated unions on `type`. */

/**
 * The resolved init options that cross into the worker: all of them but the logger (a function)
 * and what only concerns forming the main ring; the store is known by then.
 */
export type EngineOptions = Omit<ResolvedOptions, 'source' | 'hostStore' | 'tokenIsDefault' | 'logger' | 'store'> & { store: StoreAddress };

export interface GroupEntry {
  name: string;
  shape: number[];
  /** Byte offset in the group's buffer. */
  offset: number;
  count: number;
}

export type ToWorker =
  | { type: 'init'; options: EngineOptions }
  | {
      type: 'group';
      id: number;
      /** float32 data of every entry, in `entries` order; reduced in place. */
      buffer: SharedArrayBuffer;
      /** Int32Array[1]: 0 pending, 1 done, 2 failed — for Atomics.wait on the main thread. */
      control: SharedArrayBuffer;
      entries: GroupEntry[];
      meta: GroupMeta;
      /** Reply on the sync port (the main thread is blocked in Atomics.wait). */
      sync: boolean;
      /** The process set to reduce over (its id and members' world ranks); absent: the world. */
      scope?: { id: string; members: number[] };
    }
  | {
      /** A parameter-server step (ps/client.ts): gradients in `buffer` are pushed, the pulled weights replace them. */
      type: 'ps';
      id: number;
      buffer: SharedArrayBuffer;
      control: SharedArrayBuffer;
      sync: boolean;
      /** Only fetch the current weights into `buffer` (no gradients pushed). */
      fetch?: boolean;
      /** The inner optimizer's learning rate, when it changed since the last step (a schedule). */
      lr?: number;
      /** The first step: how to reach the servers, and the initial weights (rank 0's are the model's). */
      setup?: PsSetup & { initial: SharedArrayBuffer };
    }
  | { type: 'ps-save'; id: number; control: SharedArrayBuffer; sync: boolean; dir: string }
  | { type: 'shutdown' };

export type FromWorker =
  | { type: 'ready' }
  | { type: 'done'; id: number; error?: SerializedRingError; ps?: StepInfo }
  | { type: 'fatal'; error: SerializedRingError }
  | { type: 'closed' };
