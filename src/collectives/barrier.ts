import type { Collective } from './collective.js';

/**
 * Barrier. It moves no data: every collective circulates each rank's descriptor around the ring,
 * and a rank holds all N descriptors only once every rank has entered the operation — which is
 * exactly a barrier's condition. So the communicator's agreement step does all the work.
 */
export class RingBarrier implements Collective<void> {
  readonly needsTable = false;
  readonly frameless = true;
  readonly received = true;
  start(): void {}
  onData(): string {
    return 'a barrier carries no data';
  }
  result(): void {}
}
