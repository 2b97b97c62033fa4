/**
 * mulberry32: a small, fast PRNG that gives the same sequence for the same seed in every process,
 * for what ranks must draw alike without a message (the pipeline's shuffle of an epoch; the soak
 * bench and the fuzz tests draw from it too). Not for anything secret. Returns numbers in [0, 1).
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
