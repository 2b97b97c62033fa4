/** The launcher's programmatic API; `ringrun` (bin/ringrun.js) is its command line. */
export { helpText, parseArgs, UsageError, type LaunchConfig, type ParsedArgs } from './args.js';
export { main, versionLine } from './cli.js';
export { exitCodeFor, launch, signalExitCode, type LaunchOptions, type StopReason } from './job.js';
export { rankEnv, RANK_ENV_NAMES } from './env.js';
