import type { Link } from '../../transport/link.js';
import { label } from '../descriptor.js';
import type { OpTable } from './op-table.js';

/** The default budget of frames held for operations not started here (options.earlyBytes). */
export const EARLY_BYTES = 64 << 20;

/**
 * Keeps the frames held for operations not started here (ops.earlyBytes) within the budget.
 * Past it, this rank stops reading from the left (pause: the left's sends wait, its own send
 * queue holds at most maxInflight frames), which is safe only while every operation running here
 * has all it needs from the left — otherwise what it needs may be queued behind those very
 * frames. Then, if more arrive, the left has run too far ahead of an operation this rank still
 * waits for: a protocol error naming it (a peer that floods frames of operations nobody started
 * ends here too). Reading resumes as soon as the rank is under the budget again or starts an
 * operation (which needs the left).
 */
export class EarlyFlow {
  /** Reading from the left is paused, and how often it was. */
  paused = false;
  pauses = 0;

  constructor(
    private readonly leftLink: Link | undefined,
    private readonly ops: OpTable,
    private readonly budget: number,
    /** The left flooded this rank: `what` completes "rank <left> ..." in a protocol error. */
    private readonly flooded: (what: string) => void,
  ) {}

  /** Re-checks the budget; `arrived`: a frame for an operation not started here was just held. */
  update(arrived: boolean): void {
    const link = this.leftLink;
    if (!link) return;
    const over = this.ops.earlyBytes > this.budget;
    if (!over && !this.paused) return;
    const pausable = over && this.ops.leftDoneWithRunning();
    if (pausable !== this.paused) {
      this.paused = pausable;
      if (pausable) this.pauses++;
      link.pause?.(pausable);
    }
    if (over && !pausable && arrived) {
      const early = [...this.ops.values()].filter((s) => !s.coll && s.heldCopied > 0).map((s) => s.seq);
      const waiting = this.ops.running().find((s) => !(s.table.checked && s.coll!.received));
      this.flooded(
        `(left neighbour) sent ${this.ops.earlyBytes} bytes of frames for operations this rank has not started (#${Math.min(...early)}..#${Math.max(...early)}), ` +
          `past the budget of ${this.budget} bytes, while ${waiting ? label(waiting.desc!, waiting.seq) : 'an operation'} still waits for its data ` +
          `(raise options.earlyBytes / RINGREDUCE_EARLY_BYTES if ranks legitimately run that far apart)`,
      );
    }
  }
}
