import { fileURLToPath } from 'node:url';
import { benchHelp, parseBenchArgs, type BenchParsed } from './bench/args.js';
import { DEFAULT_GRACE_SEC, parseArgs, UsageError, type ParsedArgs } from './args.js';
import { helpText } from './help.js';
import { launch } from './job.js';
import { packageVersion } from './layout.js';

/**
 * ringrun's entry point (bin/ringrun.js): parse, dispatch, exit.
 *
 * Exit codes decided here: 0 for --help / --version, 2 for a bad command line, 1 if ringrun itself
 * throws. A job's own exit code comes from launch() (see job.ts).
 */
export async function main(argv: readonly string[]): Promise<never> {
  // ringrun must outlive a closed stdout (`ringrun ... | head`): an EPIPE must not crash it while
  // it still has ranks to stop.
  const ignore = () => {};
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);
  let code: number;
  try {
    // The one place the launcher reads its environment; everything below gets it passed in.
    code = await run(argv, process.env);
  } catch (e) {
    process.stderr.write(`ringrun: internal error (a bug in ringrun): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    code = 1;
  }
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  // process.exit() also runs the 'exit' hook in ranks.ts, the last guard against orphans.
  process.exit(code);
}

async function run(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  if (argv[0] === 'bench') return bench(argv.slice(1), env);
  let parsed: ParsedArgs;
  try {
    parsed = parseArgs(argv, env);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`ringrun: ${e.message} (see ringrun --help)\n`);
    return 2;
  }
  switch (parsed.kind) {
    case 'help':
      process.stdout.write(helpText());
      return 0;
    case 'version':
      process.stdout.write(`${await versionLine()}\n`);
      return 0;
    case 'run':
      return launch(parsed.config, { env, handleSignals: true });
  }
}

/** `ringrun bench ...`: the ranks run dist/launcher/bench/worker.js; rank 0 prints the table. */
async function bench(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  let parsed: BenchParsed;
  try {
    parsed = parseBenchArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`ringrun bench: ${e.message} (see ringrun bench --help)\n`);
    return 2;
  }
  if (parsed.kind === 'help') {
    process.stdout.write(benchHelp());
    return 0;
  }
  const worker = fileURLToPath(new URL('./bench/worker.js', import.meta.url));
  return launch(
    {
      np: parsed.config.np,
      command: process.execPath,
      args: [worker],
      tagOutput: false,
      graceSec: DEFAULT_GRACE_SEC,
      ...(parsed.config.bindTo && { bindTo: parsed.config.bindTo }),
      exports: new Map([['RINGREDUCE_BENCH', JSON.stringify({ bars: process.stdout.isTTY === true, ...parsed.config, progress: process.stderr.isTTY === true })]]),
    },
    { env, handleSignals: true },
  );
}

/** `ringrun 0.1.0 (kernels: js)`: the package version and the kernel backend that loaded. */
export async function versionLine(): Promise<string> {
  // Imported only here: launching ranks does not need the kernels (perhaps a native addon) loaded.
  const { kernels } = await import('../kernels/index.js');
  return `ringrun ${packageVersion()} (kernels: ${kernels.backend})`;
}

function flushed(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => stream.write('', () => resolve()));
}
