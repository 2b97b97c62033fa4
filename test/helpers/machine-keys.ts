import type * as Address from '../../src/rendezvous/address.js';

/**
 * Emulated hosts inside one process: the mock of src/rendezvous/address.js that gives each rank
 * the machine key a test hands out (one per machineKey() call, in `keys.next`), and lets ranks of
 * pretend hosts reach each other on 127.0.0.1. In a test file:
 *
 *   vi.mock('../src/rendezvous/address.js', async (original) =>
 *     (await import('./helpers/machine-keys.js')).mockAddress(await original()));
 *
 * vi.mock is hoisted above the file's imports, so its factory imports this module itself; the
 * file's own `import { keys }` gets the same instance.
 */
export const keys = {
  /** The keys the next machineKey() calls return, in order; then the real one. */
  next: [] as string[],
  /** How many times machineKey() was called. */
  asked: 0,
  /** The ranks sit on pretend hosts: loopback addresses count as reachable. */
  emulated: false,
};

export function mockAddress(real: typeof Address): typeof Address {
  return {
    ...real,
    machineKey: () => {
      keys.asked++;
      return keys.next.shift() ?? real.machineKey();
    },
    // Ranks of "several hosts" that all listen on 127.0.0.1 would be refused (checkReachable):
    // here the hosts are pretend, and loopback does reach every rank.
    isLoopback: (a: string) => !keys.emulated && real.isLoopback(a),
  };
}

/** For afterEach: no keys left for the next test, and loopback checked for real again. */
export function resetKeys(): void {
  keys.next = [];
  keys.emulated = false;
}
