// Point-to-point, all-to-all and process groups, every value checked. Run with:
//   npx ringrun -np 4 node examples/p2p.js
import * as rr from 'ringreduce';

await rr.init();
const rank = rr.rank();
const size = rr.size();
if (size < 2) throw new Error('run with at least 2 ranks: npx ringrun -np 4 node examples/p2p.js');
const right = (rank + 1) % size;
const left = (rank + size - 1) % size;
let wrong = 0;
const check = (what, got, want) => {
  if (JSON.stringify(Array.from(got)) !== JSON.stringify(want)) {
    wrong++;
    console.error(`rank ${rank}: ${what}: got ${JSON.stringify(Array.from(got))}, want ${JSON.stringify(want)}`);
  }
};

// 1. A ring shift: send to the right, receive from the left, at once (a send resolves only once
//    its recv has taken it, so post both together).
const fromLeft = new Float32Array(3);
await Promise.all([rr.send(Float32Array.of(rank, rank, rank), { dst: right, tag: 1 }), rr.recv(fromLeft, { src: left, tag: 1 })]);
check('ring shift', fromLeft, [left, left, left]);

// 2. An uneven all-to-all: rank r sends j + 1 copies of 10r + j to rank j.
const splits = Array.from({ length: size }, (_, j) => j + 1);
const x = Int32Array.from(splits.flatMap((n, j) => Array(n).fill(10 * rank + j)));
const { data, splits: from } = await rr.alltoall(x, { splits });
check('alltoall splits', from, Array(size).fill(rank + 1));
check('alltoall data', data, Array.from({ length: size }, (_, s) => Array(rank + 1).fill(10 * s + rank)).flat());

// 3. Two groups, the even and the odd ranks (every rank calls newGroup for each, in the same
//    order), all-reducing at the same time as a world all-reduce.
const evens = await rr.newGroup(Array.from({ length: size }, (_, r) => r).filter((r) => r % 2 === 0));
const odds = await rr.newGroup(Array.from({ length: size }, (_, r) => r).filter((r) => r % 2 === 1));
const mine = evens ?? odds;
const [world, group] = await Promise.all([rr.allreduce(Int32Array.of(rank)), mine.allreduce(Int32Array.of(rank))]);
check('world allreduce', world, [(size * (size - 1)) / 2]);
check('group allreduce', group, [mine.ranks().reduce((a, b) => a + b, 0)]);

console.log(
  `rank ${rank}/${size}: from rank ${left}: [${Array.from(fromLeft)}]; alltoall got [${Array.from(data)}] (splits ${from}); ` +
    `${evens ? 'even' : 'odd'} group rank ${mine.rank()}/${mine.size()}, its sum ${group[0]}; ${wrong} wrong`,
);
await rr.shutdown();
if (wrong > 0) process.exit(1);
