/** The launcher's programmatic API; `ringrun` (bin/ringrun.js) is its command line. */
export { parseArgs, UsageError, type LaunchConfig, type ParsedArgs } from './args.js';
export { helpText } from './help.js';
export { main, versionLine } from './cli.js';
export { launch, type LaunchOptions } from './job.js';
export { exitCodeFor, signalExitCode, type StopReason } from './exit-codes.js';
export { rankEnv, RANK_ENV_NAMES } from './env.js';
