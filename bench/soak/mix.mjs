// The soak's random mix: which kind of operation comes next, the process groups, and how an op
// runs on the world (and, for a group op, on a group at the same time).
import { drawCollective, runCollective } from './collectives.mjs';
import { drawAlltoall, drawSendrecv, runAlltoall, runSendrecv } from './p2p.mjs';
import { pickWeighted } from './random.mjs';

const collective = (kind, share) => ({ share, draw: (rng, n, maxBytes) => drawCollective(rng, kind, n, maxBytes), run: runCollective });

/** Every kind of world op: its share of the mix, how to draw one over n ranks, how to run it. */
const KINDS = {
  allreduce: collective('allreduce', 36),
  allgather: collective('allgather', 9),
  broadcast: collective('broadcast', 10),
  reducescatter: collective('reducescatter', 11),
  barrier: collective('barrier', 6),
  sendrecv: { share: 11, minRanks: 2, draw: drawSendrecv, run: runSendrecv },
  alltoall: { share: 9, draw: drawAlltoall, run: runAlltoall },
};
/** A group op: one of GROUP_KINDS (equal shares) inside a group, concurrently with a world op on every rank. */
const GROUP_SHARE = 8;
const GROUP_KINDS = { allreduce: 1, allgather: 1, broadcast: 1, reducescatter: 1, alltoall: 1, sendrecv: 1 };
const WORLD_KINDS = Object.fromEntries(Object.entries(KINDS).map(([k, v]) => [k, v.share]));

/** The entries of `weights` (kind -> share) that can run on n ranks. */
function possible(n, weights) {
  return Object.fromEntries(Object.entries(weights).filter(([k]) => n >= (KINDS[k].minRanks ?? 1)));
}

/** The soak's groups (n >= 2), as world ranks: the even ranks, and all but rank 0. */
export function groupLists(n) {
  const ranks = Array.from({ length: n }, (_, r) => r);
  return [ranks.filter((r) => r % 2 === 0), ranks.filter((r) => r > 0)];
}

/**
 * Makes the groups (every rank calls newGroup for each, in the same order) and checks what it got:
 * members a RingGroup numbered by ascending world rank, others null. Entries: { list, comm }, comm
 * ({ rank, size, api }) only on members.
 */
export async function makeGroups(rr, rank, n) {
  const out = [];
  for (const list of n >= 2 ? groupLists(n) : []) {
    const g = await rr.newGroup(list);
    const want = list.indexOf(rank);
    if (want < 0 ? g !== null : g?.rank() !== want || g?.size() !== list.length) {
      throw new Error(`newGroup([${list}]) on rank ${rank} gave ${g ? `rank ${g.rank()} of ${g.size()}` : 'null'}, want ${want < 0 ? 'null' : `rank ${want} of ${list.length}`}`);
    }
    out.push({ list, comm: g ? { rank: g.rank(), size: g.size(), api: g } : undefined });
  }
  return out;
}

/** The next op over n ranks; every field comes from the shared generator, so every rank draws the same. */
export function drawOp(rng, n, maxBytes) {
  const kind = pickWeighted(rng, n >= 2 ? { ...possible(n, WORLD_KINDS), group: GROUP_SHARE } : possible(n, WORLD_KINDS));
  if (kind !== 'group') return KINDS[kind].draw(rng, n, maxBytes);
  // Two ops at once: each gets half the bytes.
  const lists = groupLists(n);
  const group = rng.int(lists.length);
  const m = lists[group].length;
  const inGroup = KINDS[pickWeighted(rng, possible(m, GROUP_KINDS))].draw(rng, m, maxBytes / 2);
  const world = KINDS[pickWeighted(rng, possible(n, WORLD_KINDS))].draw(rng, n, maxBytes / 2);
  const groupFirst = rng.next() < 0.5;
  const label = `group [${lists[group]}] ${inGroup.label} with world ${world.label}${groupFirst ? ', group called first' : ''}`;
  return { kind: 'group', tally: `group ${inGroup.kind}`, label, group, inGroup, world, groupFirst };
}

/**
 * Runs d: a world op on `world`, or a group op (the group's part on its members, the world's on
 * everyone, at once). Resolves to { problem, bytes } (see runCollective); rejects on an error.
 */
export async function runOp(d, world, groups, name) {
  if (d.kind !== 'group') return KINDS[d.kind].run(world, d, name);
  const g = groups[d.group].comm;
  const runWorld = () => KINDS[d.world.kind].run(world, d.world, name);
  const runGroup = () => (g ? KINDS[d.inGroup.kind].run(g, d.inGroup, `${name}/group`) : Promise.resolve({ bytes: 0 }));
  const [w, inGroup] = d.groupFirst ? (await Promise.all([runGroup(), runWorld()])).reverse() : await Promise.all([runWorld(), runGroup()]);
  const problem = (w.problem && `world op: ${w.problem}`) ?? (inGroup.problem && `group op (rank ${g.rank} of the group): ${inGroup.problem}`);
  return { problem, bytes: w.bytes + inGroup.bytes };
}
