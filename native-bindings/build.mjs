// `npm install` runs this (package.json "install"). It builds the native kernels with node-gyp and
// never fails the install: on any error it prints one warning line and exits 0, and ringreduce
// then runs on its TypeScript kernels (src/kernels/js.ts). The full compiler output goes to
// native-bindings/build/build.log either way.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const logPath = join(here, 'build', 'build.log');
const addonPath = join(here, 'build', 'Release', 'ringreduce_kernels.node');

/** node-gyp: the copy npm runs scripts with, else the one bundled with npm next to this node. */
function nodeGypCommand() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  for (const c of candidates) if (c && existsSync(c)) return [process.execPath, c];
  return ['node-gyp'];
}

/** Build against the headers installed with this node when there are any, so no download is needed. */
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  const prefixes = [process.config.variables.node_prefix, join(dirname(process.execPath), '..')];
  const prefix = prefixes.find((p) => p && existsSync(join(p, 'include', 'node', 'node_api.h')));
  return prefix ? [`--nodedir=${prefix}`] : [];
}

/**
 * An addon newer than every source file is up to date: nothing is rebuilt or rewritten. (npx, run
 * in a clone, installs the clone into its cache and runs this again; a rebuild then rewrote the
 * addon under ranks that had it loaded.)
 */
function upToDate() {
  if (!existsSync(addonPath)) return false;
  const built = statSync(addonPath).mtimeMs;
  const sources = [join(here, 'binding.gyp'), fileURLToPath(import.meta.url), ...readdirSync(join(here, 'src')).map((f) => join(here, 'src', f))];
  return sources.every((f) => statSync(f).mtimeMs < built);
}
if (upToDate()) {
  console.log('ringreduce: native kernels are up to date (native-bindings/build/Release/ringreduce_kernels.node)');
  process.exit(0);
}

const [cmd, ...pre] = nodeGypCommand();
const args = [...pre, 'rebuild', '--jobs=max', ...nodedirArgs()];
const r = spawnSync(cmd, args, { cwd: here, encoding: 'utf8', timeout: 10 * 60_000, maxBuffer: 64 << 20 });
const log = [`$ ${cmd} ${args.join(' ')}`, r.stdout ?? '', r.stderr ?? '', r.error ? String(r.error) : ''].join('\n');
try {
  mkdirSync(dirname(logPath), { recursive: true });
  writeFileSync(logPath, log);
} catch {
  // The log is a convenience; a read-only tree must not fail the install.
}

if (r.status === 0 && existsSync(addonPath)) {
  console.log('ringreduce: built native kernels (native-bindings/build/Release/ringreduce_kernels.node)');
} else {
  const lines = `${r.stderr ?? ''}\n${r.stdout ?? ''}`.split('\n').map((l) => l.trim());
  const why = r.error?.message ?? lines.find((l) => /\berror:/i.test(l)) ?? lines.find((l) => l.includes('ERR!')) ?? `exit code ${r.status}`;
  console.warn(`ringreduce: warning: native kernels not built (${why}); using the TypeScript kernels. Full log: ${logPath}`);
}
process.exit(0);
