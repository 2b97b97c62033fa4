import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseArgs } from '../src/launcher/args.js';
import { parseBenchArgs } from '../src/launcher/bench/args.js';
import { root } from './helpers/run.js';

/**
 * Every command in the README is run here, or listed with the reason it cannot run here (issue 13,
 * item 4). A command is a line of a ```sh block (a trailing `\` joins the next line; `# ...`
 * comments are not part of it), or a `$ ` line of any block (a transcript: the lines after it are
 * its output). Blocks with `file=NAME` in their info string are files the README shows (a hostfile,
 * an sbatch script, a manifest), not commands: they are checked as files. A command that is in
 * neither table below fails the test, so a new one cannot slip in untested; an entry whose command
 * left the README fails too.
 *
 * Commands run with bash from the repository root, with the launcher variables of the calling
 * environment removed (a test run under ringrun or mpirun must not leak RANK into them) and a
 * TMPDIR of their own. Commands that cannot run here are still checked where that is cheap: ringrun
 * command lines must parse (with the README's own hosts.txt for --hostfile), and compare.mjs's
 * options must be ones its --help lists.
 */

interface Runs {
  /** Expected exit status (default 0). */
  exit?: number;
  /** Each must match the command's stdout + stderr. */
  expect?: RegExp[];
  /** Every output line the README shows under this transcript (but `...`) must be a line of the real output. */
  shownOutput?: boolean;
  /** Run in a directory shared by the commands of one group (default: the repository root). */
  cwdGroup?: string;
  /** A program that must be installed (else the test says it skipped, and why). */
  requires?: string;
}
interface CannotRun {
  reason: string;
}

const twoRanksOk = (n = 2) => [new RegExp(`(?:^|\\n)\\[1,0\\]<stdout>:rank 0/${n}: .*[;,] 0 wrong\\b`), new RegExp(`(?:^|\\n)\\[1,1\\]<stdout>:rank 1/${n}: .*[;,] 0 wrong\\b`)];

const RUN: Record<string, Runs> = {
  'npx ringrun --version': { expect: [/^ringrun \d+\.\d+\.\d+\S* \(kernels: (native|js)\)$/m] },
  'npx ringrun -np 2 node examples/allreduce.js': { expect: [...twoRanksOk(), /sum\[0\.\.2\]=1,3,5; allgather=\[0,1\]; broadcast=3\.14159/] },
  'npx ringrun -np 2 node examples/quickstart.js': {
    expect: [/\[1,0\]<stdout>:epoch 10: loss/, /\[1,0\]<stdout>:rank 0\/2: final loss/, /\[1,1\]<stdout>:rank 1\/2: final loss/],
  },
  'npx ringrun -np 2 node examples/p2p.js': { expect: twoRanksOk() },
  'npx ringrun --help': { expect: [/^Usage: ringrun -np N/m, /^Subcommands:\n {2}bench/m] },
  'npx ringrun -np 2 --timeout 600 -x OMP_NUM_THREADS=1 node examples/allreduce.js': { expect: twoRanksOk() },
  'mpirun -np 2 -x RINGREDUCE_STORE=file://$(mktemp -d) node examples/allreduce.js': {
    requires: 'mpirun',
    expect: [/^rank 0\/2: .*, 0 wrong;/m, /^rank 1\/2: .*, 0 wrong;/m],
  },
  'openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 365 -subj /CN=rr-ca': {
    requires: 'openssl',
    cwdGroup: 'tls',
  },
  'openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout rank.key -out rank.csr -subj /CN=rank': {
    requires: 'openssl',
    cwdGroup: 'tls',
  },
  'openssl x509 -req -in rank.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out rank.pem -days 365': { requires: 'openssl', cwdGroup: 'tls' },
  'npx ringrun -np 2 examples/allreduce.js': { exit: 126, shownOutput: true },
  'MASTER_ADDR=127.0.0.1 node examples/allreduce.js': { exit: 1, shownOutput: true },
  'RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 node examples/allreduce.js': { exit: 1, shownOutput: true },
  'npx ringrun bench -np 2 --min-bytes 1M --max-bytes 16M --check': { expect: [/^# ringreduce bench: all-reduce, N=2/m, /^ +16 MiB +4194304 +float +sum .* 0$/m] },
  'npx ringrun bench --help': { expect: [/^Usage: ringrun bench -np N/m] },
  'node bench/compare.mjs --help': { expect: [/--small-iters K/] },
  'node bench/pipeline.mjs --help': { expect: [/^Usage: node bench\/pipeline\.mjs \[options\]/m, /--micro LIST/] },
  'node bench/ps.mjs --help': { expect: [/^Usage: node bench\/ps\.mjs \[options\]/m, /--straggler-epochs N/] },
  'node bench/netns.mjs --help': { expect: [/^Usage: node bench\/netns\.mjs \[--hosts K\]/m, /--rate RATE/] },
};

const multihost = 'needs other hosts reachable over ssh; test/multihost.test.ts runs ringrun -H over network namespaces (its command line is parsed here)';
const CANNOT_RUN: Record<string, CannotRun> = {
  'npm install': { reason: 'installs this package: the tree under test is installed already, and rewriting its node_modules would pull it from under the suite' },
  'ringrun -H node1:4,node2:4 node train.js': { reason: multihost },
  'ringrun --hostfile hosts.txt -np 6 node train.js': { reason: multihost },
  'ringrun -H node1:2,node2:2 --iface eth1 --verbose -x OMP_NUM_THREADS=1 node train.js': { reason: multihost },
  'ringrun -H node1,node2 -p 2222 -i ~/.ssh/cluster --rsh "ssh -o StrictHostKeyChecking=accept-new" node train.js': { reason: multihost },
  'ringrun -H node1:4,node2:4 --tls-cert /etc/rr/rank.pem --tls-key /etc/rr/rank.key --tls-ca /etc/rr/ca.pem node train.js': {
    reason: `${multihost}; TLS across hosts there too, and the README's openssl recipe is run here and its certificates used by a 2-rank job below`,
  },
  'RANK=0 WORLD_SIZE=2 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 RINGREDUCE_TOKEN=s3cret node train.js': {
    reason: 'the first of two machines; test/env.test.ts covers the variables, test/faults.test.ts starts ranks through MASTER_ADDR/MASTER_PORT',
  },
  'RANK=1 WORLD_SIZE=2 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 RINGREDUCE_TOKEN=s3cret node train.js': {
    reason: 'the second of two machines (see the line before)',
  },
  'mpirun -np 8 --hostfile hosts -x RINGREDUCE_STORE=file:///shared/rr-job42 node train.js': {
    reason: 'needs hosts and a directory they share; test/multihost.test.ts runs mpirun across network namespaces with a file:// store',
  },
  'sbatch train.sbatch': { reason: 'needs a Slurm cluster; the script passes bash -n here, and test/env.test.ts covers the Slurm variables' },
  'kubectl apply -f rr-train.yaml': {
    reason: 'needs a Kubernetes cluster; every variable the manifest sets is one ringreduce reads (checked here), and test/env.test.ts covers an Indexed Job environment',
  },
  'node bench/compare.mjs --np 2,4 --sizes 4,16M,64M --iters 20 --warmup 5 --small-iters 1000': {
    reason: 'minutes of timing, against Gloo (python3-torch) and Open MPI with mpi4py; its options are checked against compare.mjs --help here',
  },
  'node bench/netns.mjs --hosts 2 --sizes 4,64M': {
    reason: 'a minute or more of timing as root, against Gloo and Open MPI; test/netns-bench.test.ts runs it with 2 hosts at 4 B and 64 KiB',
  },
  'node bench/netns.mjs --hosts 2 --rate 1gbit --sizes 16M,64M': {
    reason: 'minutes of timing over links shaped to 1 Gbit/s, as root; test/netns-bench.test.ts runs netns.mjs unshaped, test/netns.test.ts runs ranks over tbf-shaped links',
  },
  'npm install ringreduce @tensorflow/tfjs': { reason: 'installs from the registry into a project of your own; test/tfjs-copy.test.ts builds such a project (its own tfjs, ringreduce linked) and trains in it' },
  'cd ringreduce && npm pack': { reason: 'packs a clone (runs the build again) for the next line; test/tfjs-copy.test.ts covers the project it goes into' },
  'cd ../my-project && npm install ../ringreduce/ringreduce-0.1.0.tgz': { reason: 'installs into a project of your own; test/tfjs-copy.test.ts builds such a project and trains in it' },
  'npm test': { reason: 'the whole suite, of which this file is a part' },
  'node bench/soak.mjs --np 3 --ops 5000': { reason: 'minutes; test/soak.test.ts runs the same soak with 400 operations' },
  'npx ringrun -np 2 node examples/pipeline/train.js': {
    reason: 'minutes of training (its run is recorded in examples/pipeline/README.md); test/pipeline.test.ts trains the same pipeline code against one process, 2 and 3 stages, both schedules',
  },
  'npx ringrun -np 3 --servers 1 node examples/parameter-server/train.js --mode async --slow-worker 2': {
    reason: 'a minute of training on shared cores (its figures are in docs/PARAMETER_SERVER.md); test/ps-*.test.ts run the same parameter-server paths: sync against one process, async and stale with a straggler, faults, checkpoints',
  },
  'RINGREDUCE_PS_SERVER=0 RINGREDUCE_PS_SERVERS=1 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 RINGREDUCE_TOKEN=s3cret node node_modules/ringreduce/dist/ps/server-main.js': {
    reason: 'a server for workers on another machine; test/ps-options.test.ts starts a server and two workers this way (torchrun-style variables) on this host',
  },
  'npm run bench:kernels': { reason: 'minutes of benny timing; test/kernels-parity.test.ts and test/kernels-half.test.ts check the kernels it times' },
};

// ---------------------------------------------------------------------------------------------
// Reading the README

interface Block {
  lang: string;
  file?: string;
  lines: string[];
  /** 1-based line of the opening fence. */
  at: number;
}
interface Command {
  text: string;
  /** The output lines a transcript shows after it. */
  shown: string[];
  line: number;
}

function blocksOf(markdown: string): { blocks: Block[]; prose: string[] } {
  const blocks: Block[] = [];
  const prose: string[] = [];
  let open: (Block & { indent: number }) | undefined;
  markdown.split('\n').forEach((line, i) => {
    const fence = /^(\s*)```+(.*)$/.exec(line);
    if (open) {
      if (fence && fence[2].trim() === '') {
        blocks.push(open);
        open = undefined;
      } else open.lines.push(line.slice(Math.min(open.indent, line.length - line.trimStart().length)));
      return;
    }
    if (fence) {
      const [lang = '', ...attrs] = fence[2].trim().split(/\s+/);
      const file = attrs.find((a) => a.startsWith('file='))?.slice('file='.length);
      open = { lang, file, lines: [], at: i + 1, indent: fence[1].length };
      return;
    }
    prose.push(line);
  });
  if (open) throw new Error(`README.md:${open.at}: a code block that never closes`);
  return { blocks, prose };
}

const stripComment = (s: string) => s.replace(/(^|\s)#\s.*$/, '').trim();

function commandsOf(blocks: Block[]): Command[] {
  const out: Command[] = [];
  for (const b of blocks) {
    if (b.file) continue;
    if (b.lang === 'sh') {
      let pending = '';
      b.lines.forEach((raw, i) => {
        const line = raw.replace(/^\$ /, '');
        if (!pending && (line.trim() === '' || line.trim().startsWith('#'))) return;
        if (line.endsWith('\\')) {
          pending += line.slice(0, -1) + ' ';
          return;
        }
        out.push({ text: stripComment(pending + line), shown: [], line: b.at + 1 + i });
        pending = '';
      });
      continue;
    }
    // Transcripts in any other block: `$ command`, then its output.
    let cur: Command | undefined;
    b.lines.forEach((line, i) => {
      if (line.startsWith('$ ')) {
        cur = { text: stripComment(line.slice(2)), shown: [], line: b.at + 1 + i };
        out.push(cur);
      } else if (cur && line.trim() !== '' && line.trim() !== '...') cur.shown.push(line.trim());
    });
  }
  return out;
}

const readme = readFileSync(join(root, 'README.md'), 'utf8');
const { blocks } = blocksOf(readme);
const commands = commandsOf(blocks);
const files = new Map(blocks.filter((b) => b.file).map((b) => [b.file!, b.lines.join('\n') + '\n']));

// ---------------------------------------------------------------------------------------------
// Running a command

const LAUNCHER_VARS = /^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|MASTER_ADDR|MASTER_PORT|RINGRUN.*|RINGREDUCE_.*|OMPI_.*|PMI_.*|PMIX_.*|SLURM_.*|MPI_LOCAL.*)$/;
const scratch = mkdtempSync(join(tmpdir(), 'rr-readme-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
const groupDirs = new Map<string, string>();
const groupDir = (g: string) => {
  if (!groupDirs.has(g)) groupDirs.set(g, mkdtempSync(join(scratch, `${g}-`)));
  return groupDirs.get(g)!;
};

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!LAUNCHER_VARS.test(k)) env[k] = v;
  env.PATH = [dirname(process.execPath), env.PATH ?? ''].join(delimiter);
  env.TMPDIR = mkdtempSync(join(scratch, 'tmp-'));
  if (process.getuid?.() === 0) {
    // Open MPI refuses to run as root without these (CI containers run as root).
    env.OMPI_ALLOW_RUN_AS_ROOT = '1';
    env.OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = '1';
  }
  // mpirun counts slots by cores: let its 2 ranks run on a 1-core runner too.
  env.OMPI_MCA_rmaps_base_oversubscribe = '1';
  return env;
}

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

/**
 * `npx ringrun` in the commands runs this checkout's bin/ringrun.js directly. The real npx, in a
 * fresh clone (CI), finds no `ringrun` in node_modules/.bin, so it installs the clone itself into
 * its cache as a linked `file:` package and runs the clone's prepare and install scripts: tsc and
 * node-gyp rewrote dist/ and the addon in place while other test files ran, which failed them (a
 * module without its exports, no native addon) in two fresh-clone runs. Builds that change nothing
 * now write nothing, but each such install still costs seconds.
 */
const NPX_RINGRUN = `npx() { if [ "$1" = ringrun ]; then shift; node ${JSON.stringify(join(root, 'bin', 'ringrun.js'))} "$@"; else command npx "$@"; fi; }\n`;

/** `bash -c command` in `cwd`, its own process group, killed whole after `deadlineMs`. */
function run(command: string, cwd: string, env: NodeJS.ProcessEnv, deadlineMs: number): Promise<Result> {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', ['-c', NPX_RINGRUN + command], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    p.stdout.on('data', (d) => (output += d));
    p.stderr.on('data', (d) => (output += d));
    const t = setTimeout(() => {
      try {
        process.kill(-p.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
      reject(new Error(`'${command}' did not finish within ${deadlineMs} ms; output:\n${output}`));
    }, deadlineMs);
    p.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, output });
    });
  });
}

const have = (program: string) => spawnSync('bash', ['-c', `command -v ${program}`], { stdio: 'ignore' }).status === 0;

// ---------------------------------------------------------------------------------------------
// Shell words, for the command lines that are parsed rather than run

function words(command: string): string[] {
  const out: string[] = [];
  let cur: string | undefined;
  for (let i = 0; i < command.length; i++) {
    const c = command[i];
    if (c === "'" || c === '"') {
      const end = command.indexOf(c, i + 1);
      if (end < 0) throw new Error(`unbalanced ${c} in: ${command}`);
      cur = (cur ?? '') + command.slice(i + 1, end);
      i = end;
    } else if (c === '\\') cur = (cur ?? '') + command[++i];
    else if (/\s/.test(c)) {
      if (cur !== undefined) out.push(cur);
      cur = undefined;
    } else cur = (cur ?? '') + c;
  }
  if (cur !== undefined) out.push(cur);
  return out;
}

/** ringrun's arguments in a command line (after VAR=value assignments and npx), or undefined. */
function ringrunArgs(command: string): string[] | undefined {
  const w = words(command);
  while (w.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(w[0])) w.shift();
  if (w[0] === 'npx') w.shift();
  return w[0] === 'ringrun' ? w.slice(1) : undefined;
}

// ---------------------------------------------------------------------------------------------

describe("the README's commands", () => {
  it('every command is run or listed with the reason it cannot run, and every entry is still in the README', () => {
    expect(commands.length).toBeGreaterThan(10);
    const unknown = commands.filter((c) => !(c.text in RUN) && !(c.text in CANNOT_RUN)).map((c) => `README.md:${c.line}: ${c.text}`);
    expect(unknown, 'commands neither run by test/readme.test.ts nor in its CANNOT_RUN list').toEqual([]);
    const texts = new Set(commands.map((c) => c.text));
    const stale = [...Object.keys(RUN), ...Object.keys(CANNOT_RUN)].filter((t) => !texts.has(t));
    expect(stale, 'entries of test/readme.test.ts whose command is no longer in the README').toEqual([]);
    for (const [t, c] of Object.entries(CANNOT_RUN)) expect(c.reason.length, t).toBeGreaterThan(20);
  });

  it('every code block says what it holds (sh, js, ts, text, yaml)', () => {
    const bad = blocks.filter((b) => !['sh', 'js', 'ts', 'text', 'yaml'].includes(b.lang)).map((b) => `README.md:${b.at}: '${b.lang}'`);
    expect(bad).toEqual([]);
  });

  const seen = new Set<string>();
  const toRun = commands.filter((c) => c.text in RUN && !seen.has(c.text) && seen.add(c.text));
  it.each(toRun.map((c) => [c.text, c] as const))('runs: %s', async (_, c) => {
    const r = RUN[c.text];
    if (r.requires && !have(r.requires)) {
      console.log(`skipped, '${r.requires}' is not installed: ${c.text}`);
      return;
    }
    const res = await run(c.text, r.cwdGroup ? groupDir(r.cwdGroup) : root, cleanEnv(), 90_000);
    expect(res.code, `exit status of '${c.text}'; output:\n${res.output}`).toBe(r.exit ?? 0);
    for (const re of r.expect ?? []) expect(res.output, c.text).toMatch(re);
    if (r.shownOutput) {
      expect(c.shown.length, `README.md:${c.line}: a transcript with shownOutput shows no output`).toBeGreaterThan(0);
      const got = new Set(res.output.split('\n').map((l) => l.trim()));
      for (const line of c.shown) expect(got.has(line), `README.md shows a line '${c.text}' does not print:\n${line}\nit printed:\n${res.output}`).toBe(true);
    }
  }, 120_000);

  it("the TLS recipe's certificates carry a 2-rank job (wss:// with mutual verification)", async () => {
    const dir = groupDirs.get('tls');
    if (!dir || !existsSync(join(dir, 'rank.pem'))) {
      expect(have('openssl'), 'the openssl commands ran, yet made no rank.pem').toBe(false);
      return;
    }
    const tls = ['--tls-cert', join(dir, 'rank.pem'), '--tls-key', join(dir, 'rank.key'), '--tls-ca', join(dir, 'ca.pem')].join(' ');
    const res = await run(`npx ringrun -np 2 ${tls} node examples/allreduce.js`, root, { ...cleanEnv(), COUNT: '1000' }, 90_000);
    expect(res.code, res.output).toBe(0);
    for (const re of twoRanksOk()) expect(res.output).toMatch(re);
  }, 120_000);

  it('ringrun command lines that cannot run here parse (--hostfile reads the README\'s hosts.txt)', () => {
    const readFile = (path: string) => {
      const text = files.get(path);
      if (text === undefined) throw new Error(`the README shows no file ${path}`);
      return text;
    };
    let parsed = 0;
    for (const c of commands) {
      const args = ringrunArgs(c.text);
      if (!args) continue;
      if (args[0] === 'bench') {
        expect(parseBenchArgs(args.slice(1)).kind, c.text).toMatch(/^(bench|help)$/);
      } else {
        const p = parseArgs(args, {}, readFile);
        expect(p.kind, c.text).toMatch(/^(run|help|version)$/);
        // The multi-host lines start a user's train.js; the repository's own examples that take minutes are named as they are.
        if (p.kind === 'run' && c.text in CANNOT_RUN && !c.text.includes(' examples/')) expect([p.config.command, ...p.config.args], c.text).toEqual(['node', 'train.js']);
      }
      parsed++;
    }
    expect(parsed).toBeGreaterThan(8);
  });

  it("compare.mjs command lines use only options its --help lists (--small-iters is compare.mjs's, not ringrun bench's)", () => {
    const help = spawnSync(process.execPath, [join(root, 'bench', 'compare.mjs'), '--help'], { encoding: 'utf8' }).stdout;
    const benchHelp = spawnSync(process.execPath, [join(root, 'bin', 'ringrun.js'), 'bench', '--help'], { encoding: 'utf8' }).stdout;
    const lines = commands.filter((c) => words(c.text).slice(0, 2).join(' ') === 'node bench/compare.mjs');
    expect(lines.length).toBeGreaterThan(0);
    for (const c of lines) {
      for (const opt of words(c.text).filter((w) => w.startsWith('--') && w !== '--help')) expect(help, `${opt} in '${c.text}'`).toContain(opt);
    }
    expect(help).toContain('--small-iters');
    expect(benchHelp).not.toContain('--small-iters');
  });
});

describe("the README's files and names", () => {
  it('the sbatch script is valid bash', () => {
    const script = files.get('train.sbatch');
    expect(script).toBeDefined();
    const r = spawnSync('bash', ['-n'], { input: script, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  });

  it('every variable the Kubernetes manifest and the sbatch script set is one ringreduce reads (or the launcher sets)', () => {
    const src = sourceText();
    const manifest = files.get('rr-train.yaml')!;
    const fromYaml = [...manifest.matchAll(/name: ([A-Z][A-Z0-9_]+)\b/g)].map((m) => m[1]);
    const fromSbatch = [...files.get('train.sbatch')!.matchAll(/export ([A-Z][A-Z0-9_]+)=/g)].map((m) => m[1]);
    expect(fromYaml).toEqual(expect.arrayContaining(['RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'RINGREDUCE_TOKEN']));
    // OMP_NUM_THREADS is for the math libraries, not for ringreduce.
    for (const v of [...fromYaml, ...fromSbatch].filter((v) => v !== 'OMP_NUM_THREADS')) expect(src, v).toMatch(new RegExp(`\\b${v}\\b`));
  });

  it('every RINGREDUCE_/RINGRUN_ variable and RING_ERR_ code the README names exists in src/', () => {
    const src = sourceText();
    const names = (text: string) => new Set(text.match(/\bRING(?:REDUCE|RUN)_[A-Z_]*[A-Z]\b|\bRING_ERR_[A-Z_]*[A-Z]\b/g));
    const inSrc = names(src);
    const missing = [...names(readme)].filter((n) => !inSrc.has(n));
    expect(missing).toEqual([]);
  });

  it('links between the README and the docs resolve: files exist, #anchors name headings', () => {
    const docs = [
      'README.md',
      'CHANGELOG.md',
      'examples/mnist/README.md',
      'native-bindings/README.md',
      ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`),
    ];
    const broken: string[] = [];
    for (const doc of docs) {
      const text = readFileSync(join(root, doc), 'utf8');
      const { prose } = blocksOf(text);
      for (const m of prose.join('\n').matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1];
        if (/^[a-z]+:/.test(target)) continue;
        const [path, anchor] = target.split('#');
        const file = path ? join(dirname(join(root, doc)), path) : join(root, doc);
        if (!existsSync(file)) {
          broken.push(`${doc}: ${target} (no such file)`);
          continue;
        }
        if (anchor !== undefined && file.endsWith('.md') && !anchorsOf(readFileSync(file, 'utf8')).has(anchor)) {
          broken.push(`${doc}: ${target} (no such heading)`);
        }
      }
    }
    expect(broken).toEqual([]);
  });
});

function sourceText(): string {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (/\.(ts|js|mjs)$/.test(e.name)) out.push(readFileSync(join(dir, e.name), 'utf8'));
    }
  };
  walk(join(root, 'src'));
  walk(join(root, 'bin'));
  return out.join('\n');
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', repeats numbered. */
function anchorsOf(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of blocksOf(markdown).prose) {
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const base = h[1]
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}
