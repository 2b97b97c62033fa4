import { existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as TfCore from '@tensorflow/tfjs-core';
import type * as TfLayers from '@tensorflow/tfjs-layers';
import type * as TfData from '@tensorflow/tfjs-data';
import { RingInvalidArgError, RingTfjsCopyError } from '../errors.js';

/**
 * TensorFlow.js is a peer dependency: ringreduce works with whichever tfjs the application has
 * (@tensorflow/tfjs, tfjs-node, tfjs-node-gpu, backend-wasm) and must share its one instance
 * (tfjs's classes are compared with instanceof). It is loaded only on first use of the tfjs
 * features — plain collectives never load it — and resolved where the application's copy is:
 * from the entry script, then the working directory, and only then from ringreduce itself. The
 * last is where a symlinked install (`npm install ../ringreduce`, `npm link`) would otherwise find
 * a second copy: ringreduce's own development node_modules.
 */
function resolutionBases(): string[] {
  const bases: string[] = [];
  const main = process.argv[1];
  if (main && existsSync(main)) {
    try {
      bases.push(realpathSync(main));
    } catch {
      // unreadable: skip it
    }
  }
  bases.push(join(process.cwd(), '[ringreduce]'), fileURLToPath(import.meta.url));
  return bases;
}

let base: { require: NodeJS.Require; coreDir: string } | undefined | null = null;

/** The require function of the first base from which tfjs-core resolves, and where it resolved. */
function tfBase(): { require: NodeJS.Require; coreDir: string } | undefined {
  if (base !== null) return base;
  base = undefined;
  for (const b of resolutionBases()) {
    const req = createRequire(b);
    try {
      base = { require: req, coreDir: dirname(req.resolve('@tensorflow/tfjs-core/package.json')) };
      break;
    } catch {
      // not from here
    }
  }
  return base;
}

function load<T>(id: string): T | undefined {
  const b = tfBase();
  if (!b) return undefined;
  try {
    return b.require(id) as T;
  } catch {
    return undefined;
  }
}

let core: typeof TfCore | undefined | null = null;
let layers: typeof TfLayers | undefined | null = null;

export function needTf(what: string): typeof TfCore {
  if (core === null) core = load('@tensorflow/tfjs-core');
  const tfc = core;
  if (!tfc) {
    throw new RingInvalidArgError(`${what} needs TensorFlow.js: npm install @tensorflow/tfjs (or @tensorflow/tfjs-node / -node-gpu)`);
  }
  return tfc;
}

export function needLayers(what: string): typeof TfLayers {
  if (layers === null) layers = load('@tensorflow/tfjs-layers');
  const tfl = layers;
  if (!tfl) throw new RingInvalidArgError(`${what} needs @tensorflow/tfjs-layers (part of @tensorflow/tfjs and tfjs-node)`);
  return tfl;
}

/**
 * The error for an application object made by another copy of tfjs than the one ringreduce
 * loaded. Optimizers pass (tf.Optimizer's instanceof checks the methods), but model.fit of another
 * copy does not recognise ringreduce's callbacks and fails far from here (`Cannot read properties
 * of undefined (reading 'weights')`).
 */
export function foreignTfjsCopy(what: string): RingTfjsCopyError {
  const b = tfBase();
  core ??= load('@tensorflow/tfjs-core');
  const version = core ? ` ${core.version_core}` : '';
  return new RingTfjsCopyError(
    `${what} comes from a different copy of TensorFlow.js than the one ringreduce loaded (@tensorflow/tfjs-core${version} at ${b?.coreDir ?? '?'}). ` +
      `Two copies are loaded: this happens when ringreduce is installed as a symlink (npm install ../ringreduce, npm link), which resolves ` +
      `ringreduce's own node_modules. Install it from a tarball instead (cd ringreduce && npm pack; then npm install ./ringreduce-<version>.tgz in ` +
      `your project), or run the script from your project's directory so that its @tensorflow/tfjs is found first (npm ls @tensorflow/tfjs-core shows the copies)`,
  );
}

/**
 * TensorFlow.js's CPU backend prints a banner ("Hi, looks like you are running TensorFlow.js in
 * Node.js...") on its first tensor, once per process: once per rank. Ranks other than 0 skip it,
 * if the application has loaded tfjs (its engine is global); nothing is loaded for this.
 */
export function quietTfjsBanner(): void {
  type Backend = { firstUse?: boolean };
  const engine = (globalThis as { _tfengine?: { registry?: Record<string, Backend>; registryFactory?: Record<string, { factory: () => unknown }> } })._tfengine;
  const quiet = (b: unknown) => {
    if (b && typeof b === 'object' && (b as Backend).firstUse === true) (b as Backend).firstUse = false;
    return b;
  };
  quiet(engine?.registry?.cpu);
  // tfjs makes a new backend from this factory whenever it (re)initializes one.
  const entry = engine?.registryFactory?.cpu;
  if (entry && typeof entry.factory === 'function') {
    const make = entry.factory;
    entry.factory = () => quiet(make());
  }
}

let data: typeof TfData | undefined | null = null;

export function needData(what: string): typeof TfData {
  if (data === null) data = load('@tensorflow/tfjs-data');
  if (!data) throw new RingInvalidArgError(`${what} needs @tensorflow/tfjs-data (part of @tensorflow/tfjs and tfjs-node)`);
  return data;
}

/**
 * tfjs with a backend, for a process that runs no application code of its own (a parameter
 * server): the application's full package (tfjs-node first, then tfjs) registers its backends on
 * import; tfjs-core alone has none.
 */
export function needTfWithBackend(what: string): typeof TfCore {
  for (const pkg of ['@tensorflow/tfjs-node', '@tensorflow/tfjs']) {
    if (load(pkg) !== undefined) break;
  }
  return needTf(what);
}
