import { newGroup, rank, size } from '../api.js';
import { RingInvalidArgError } from '../errors.js';
import type { ProcessGroup } from '../group.js';

export interface PipelineGroups {
  /** This rank's pipeline: `stages` consecutive world ranks (pass as options.group). */
  group: ProcessGroup;
  /** The same stage in every pipeline (pass as options.replicas). */
  replicas: ProcessGroup;
  /** Which pipeline this rank is in, and how many there are (shard the data by them). */
  pipeline: number;
  pipelines: number;
}

/**
 * The process sets of data x pipeline parallelism, made by every rank of the world alike:
 * size() / stages pipelines of `stages` consecutive ranks each (pipeline p = ranks p·S ..
 * p·S + S - 1, stage s = its s-th rank), and for each stage the group of its replicas (ranks s,
 * S + s, 2S + s, ...). With 4 ranks and 2 stages: pipelines [0, 1] and [2, 3], replicas [0, 2]
 * and [1, 3].
 */
export async function pipelineGroups(stages: number): Promise<PipelineGroups> {
  const n = size();
  if (!Number.isSafeInteger(stages) || stages < 1 || n % stages !== 0) {
    throw new RingInvalidArgError(`pipelineGroups(stages): stages must be an integer >= 1 that divides the world size ${n}, got ${JSON.stringify(stages)}`, {
      rank: rank(),
      op: 'pipelineGroups',
    });
  }
  const pipelines = n / stages;
  let group: ProcessGroup | null = null;
  let replicas: ProcessGroup | null = null;
  for (let p = 0; p < pipelines; p++) group = (await newGroup(Array.from({ length: stages }, (_, s) => p * stages + s))) ?? group;
  for (let s = 0; s < stages; s++) replicas = (await newGroup(Array.from({ length: pipelines }, (_, p) => p * stages + s))) ?? replicas;
  return { group: group!, replicas: replicas!, pipeline: Math.floor(rank() / stages), pipelines };
}
