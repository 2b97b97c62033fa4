import { constants } from 'node:os';
import type { RankExit, RankProcess } from './ranks.js';

/** Why a job ended before all of its ranks succeeded. */
export type StopReason =
  | { kind: 'rank-failed'; rank: RankProcess; exit: Exclude<RankExit, { kind: 'spawn-failed' }> }
  | { kind: 'spawn-failed'; rank: number; error: NodeJS.ErrnoException }
  | { kind: 'timeout' }
  | { kind: 'signal'; signal: NodeJS.Signals };

export const EXIT_TIMEOUT = 124;
export const EXIT_CANNOT_EXECUTE = 126;
export const EXIT_NOT_FOUND = 127;
/** ringrun itself failed (e.g. the store could not listen, or a host failed the preflight check). */
export const EXIT_LAUNCHER_ERROR = 1;

/** Shell convention: a process killed by signal S "exits" with 128 + S. */
export function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + (constants.signals[signal] ?? 0);
}

export function exitCodeFor(reason: StopReason | undefined): number {
  if (!reason) return 0;
  switch (reason.kind) {
    case 'rank-failed':
      return reason.exit.kind === 'exited' ? reason.exit.code : signalExitCode(reason.exit.signal);
    case 'spawn-failed':
      return reason.error.code === 'ENOENT' ? EXIT_NOT_FOUND : EXIT_CANNOT_EXECUTE;
    case 'timeout':
      return EXIT_TIMEOUT;
    case 'signal':
      return signalExitCode(reason.signal);
  }
}
