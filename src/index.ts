// The public API of ringreduce: a list of exports, nothing else.
export {
  init,
  initialized,
  rank,
  size,
  localRank,
  localSize,
  allreduce,
  allgather,
  broadcast,
  reducescatter,
  barrier,
  alltoall,
  send,
  recv,
  newGroup,
  shutdown,
} from './api.js';
export { RingGroup } from './group.js';
export { ProcessGroup } from './group.js';
export type {
  AllreduceOptions,
  AllgatherOptions,
  BroadcastOptions,
  ReducescatterOptions,
  BarrierOptions,
  AlltoallOptions,
  AlltoallResult,
  SendOptions,
  RecvOptions,
  ReduceOp,
} from './group.js';
export { createLocalGroups } from './local.js';
export type { LocalGroupsOptions } from './local.js';
export type { InitOptions } from './options.js';
export type { NumericArray, DType } from './dtypes.js';
export type { Logger } from './logger.js';
export { kernels } from './kernels/index.js';
export {
  RingError,
  RingInvalidArgError,
  RingNotInitializedError,
  RingMismatchError,
  RingTimeoutError,
  RingPeerLostError,
  RingAuthError,
  RingProtocolError,
  RingRendezvousError,
  RingShutdownError,
  RingTfjsCopyError,
  RingInternalError,
} from './errors.js';
export type { RingErrorCode, RingErrorDetails } from './errors.js';
export { DistributedOptimizer } from './tfjs/optimizer.js';
export type { DistributedOptimizerOptions } from './tfjs/optimizer.js';
export type { ParameterServerOptions, ParameterServerStats } from './ps/worker-side.js';
export { callbacks } from './tfjs/callbacks.js';
export type { LearningRateWarmupOptions } from './tfjs/callbacks.js';
export { broadcastVariables, broadcastOptimizerState } from './tfjs/variables.js';
export { shard } from './tfjs/data.js';
export type { ShardOptions } from './tfjs/data.js';
export { pipeline, Pipeline } from './pipeline/pipeline.js';
export type { PipelineOptions, PipelineFitArgs, PipelinePredictArgs } from './pipeline/pipeline.js';
export { pipelineGroups } from './pipeline/groups.js';
export type { PipelineGroups } from './pipeline/groups.js';
