// All-reduce bandwidth at one size, nccl-tests style (algbw = bytes / time, busbw = algbw * 2(N-1)/N;
// time = median over iterations of the slowest rank). Run with:
//   npx ringrun -np 2 node bench/allreduce.mjs [bytes=64M] [iters=20] [warmup=5]
import * as rr from 'ringreduce';

const parseBytes = (s) => {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  return Number(m[1]) * { '': 1, K: 1024, M: 1 << 20, G: 1 << 30 }[m[2].toUpperCase()];
};
const bytes = parseBytes(process.argv[2] ?? '64M');
const iters = Number(process.argv[3] ?? 20);
const warmup = Number(process.argv[4] ?? 5);
const inPlace = process.env.INPLACE !== "0";

await rr.init(process.env.INFLIGHT ? { maxInflight: Number(process.env.INFLIGHT) } : {});
const n = rr.size();
const count = Math.floor(bytes / 4);
const x = new Float32Array(count);
for (let i = 0; i < count; i++) x[i] = (i % 7) + rr.rank();
// In place, x keeps growing (x = N*x each call): values stay finite for the iteration counts used here.
for (let i = 0; i < warmup; i++) await rr.allreduce(x, { inPlace });
const times = [];
for (let i = 0; i < iters; i++) {
  await rr.barrier();
  const t0 = performance.now();
  await rr.allreduce(x, { inPlace });
  times.push(performance.now() - t0);
}
// The slowest rank defines each iteration's time.
const worst = await rr.allreduce(Float64Array.from(times), { op: 'max' });
const sorted = Array.from(worst).sort((a, b) => a - b);
const med = sorted[Math.floor(sorted.length / 2)] / 1000;
const algbw = bytes / med / 1e9;
if (rr.rank() === 0) {
  console.log(
    `N=${n} bytes=${bytes} float32 sum: time ${(med * 1e6).toFixed(0)} us (median of ${iters}), ` +
      `algbw ${algbw.toFixed(3)} GB/s, busbw ${((algbw * 2 * (n - 1)) / n).toFixed(3)} GB/s, kernels=${rr.kernels.backend}`,
  );
}
await rr.shutdown();
