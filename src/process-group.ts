import { Communicator, type CommunicatorOptions } from './collectives/communicator.js';
import { descriptor } from './collectives/descriptor.js';
import { Hierarchy } from './collectives/hierarchical.js';
import { RingBarrier } from './collectives/barrier.js';
import { RingInvalidArgError, type RingError } from './errors.js';
import { PointToPoint } from './p2p/engine.js';
import type { Mesh } from './transport/mesh.js';

export interface FabricOptions extends CommunicatorOptions {
  /** Time for a group's members to link up. */
  startTimeoutMs: number;
}

/**
 * What every group of one job shares: the mesh of links to any rank, the point-to-point engine on
 * it, and the groups made from the world (shut down with it). Made once per process-wide ring
 * (formRing) or per local rank (createLocalGroups).
 */
export class Fabric {
  readonly p2p: PointToPoint;
  private readonly children = new Set<{ shutdown(): Promise<void> }>();
  private closed = false;

  constructor(
    readonly mesh: Mesh,
    readonly options: FabricOptions,
    worldError: () => RingError | undefined,
  ) {
    this.p2p = new PointToPoint(mesh, options, worldError);
  }

  adopt(child: { shutdown(): Promise<void> }): void {
    this.children.add(child);
  }

  forget(child: { shutdown(): Promise<void> }): void {
    this.children.delete(child);
  }

  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of [...this.children]) await c.shutdown().catch(() => {});
    await this.p2p.shutdown();
    await this.mesh.close();
  }
}

/** Checks newGroup's list against a group of `size`: distinct integer ranks, in ascending order. */
export function groupMembers(ranks: unknown, size: number, me: number): number[] {
  const bad = (what: string) => new RingInvalidArgError(`newGroup(ranks): ${what}`, { rank: me, op: 'newGroup' });
  if (!Array.isArray(ranks) || ranks.length === 0) throw bad(`ranks must be a non-empty array of ranks, got ${JSON.stringify(ranks)}`);
  for (const r of ranks) {
    if (!Number.isInteger(r) || r < 0 || r >= size) throw bad(`${JSON.stringify(r)} is not a rank in 0..${size - 1}`);
  }
  const sorted = [...(ranks as number[])].sort((a, b) => a - b);
  for (let i = 1; i < sorted.length; i++) if (sorted[i] === sorted[i - 1]) throw bad(`rank ${sorted[i]} is listed twice`);
  return sorted;
}

/**
 * The ring of a new group: member i sends to member i+1 on a link it opens, and receives from
 * member i-1 on the link that one opens (channel `g<id>`), then a barrier proves the ring.
 */
export async function groupCommunicator(fabric: Fabric, id: string, members: number[], index: number): Promise<Communicator> {
  const m = members.length;
  const o = fabric.options;
  if (m === 1) return new Communicator(0, 1, undefined, undefined, o);
  const channel = `g${id}`;
  const right = members[(index + 1) % m];
  const left = members[(index - 1 + m) % m];
  const [rightLink, leftLink] = await Promise.all([fabric.mesh.connect(right, channel), fabric.mesh.accept(left, channel, o.startTimeoutMs)]);
  return new Communicator(index, m, leftLink, rightLink, o);
}

/**
 * The two rings of the hierarchical all-reduce (collectives/hierarchical.ts), made once at init by
 * every rank of a layout that allows it (rendezvous/hosts.ts): the host ring of `host` (this
 * rank's host, by world rank) and the cross-host ring of `cross` (the ranks of this rank's local
 * index, by host), each on a channel of its own and proved by a barrier. Closed with the world
 * (the fabric adopts them).
 */
export async function hierarchyFor(fabric: Fabric, rank: number, size: number, host: number[], cross: number[]): Promise<Hierarchy> {
  const ring = async (id: string, members: number[]) => {
    const comm = await groupCommunicator(fabric, id, members, members.indexOf(rank));
    await comm.run(descriptor('barrier', { name: `ringreduce:${id}` }), new RingBarrier());
    return { comm, members };
  };
  const [h, c] = await Promise.all([ring('hier.host', host), ring('hier.cross', cross)]);
  const hierarchy = new Hierarchy(rank, size, h, c);
  fabric.adopt(hierarchy);
  return hierarchy;
}
