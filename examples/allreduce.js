// Every rank contributes [rank, rank+1, ...] and checks the exact ring sum, then tries the other
// collectives. Run with:  npx ringrun -np 4 node examples/allreduce.js
import * as rr from 'ringreduce';

await rr.init();
const rank = rr.rank();
const size = rr.size();
const count = Number(process.env.COUNT ?? 1_000_003);

// Integer-valued float32 data: every sum is exact, so every rank can check it bit for bit.
const x = Float32Array.from({ length: count }, (_, i) => (i % 1000) + rank);
const t0 = performance.now();
const sum = await rr.allreduce(x, { op: 'sum', name: 'example' });
const ms = performance.now() - t0;
let wrong = 0;
const ranksTotal = (size * (size - 1)) / 2;
for (let i = 0; i < count; i++) if (sum[i] !== size * (i % 1000) + ranksTotal) wrong++;

const gathered = await rr.allgather(Int32Array.of(rank));
const fromRoot = await rr.broadcast(Float64Array.of(rank === 0 ? Math.PI : 0), { root: 0 });
const mine = await rr.reducescatter(Int32Array.from({ length: size * 2 }, (_, i) => i), { op: 'sum' });
await rr.barrier();

console.log(
  `rank ${rank}/${size}: allreduce of ${count} floats in ${ms.toFixed(1)} ms, ${wrong} wrong; ` +
    `sum[0..2]=${Array.from(sum.subarray(0, 3)).join(',')}; allgather=[${Array.from(gathered).join(',')}]; ` +
    `broadcast=${fromRoot[0].toFixed(5)}; reducescatter=[${Array.from(mine).join(',')}]`,
);
await rr.shutdown();
if (wrong > 0) process.exit(1);
