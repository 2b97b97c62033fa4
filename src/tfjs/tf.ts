import { createRequire } from 'node:module';
import type * as TfCore from '@tensorflow/tfjs-core';
import type * as TfLayers from '@tensorflow/tfjs-layers';
import type * as TfData from '@tensorflow/tfjs-data';
import { RingInvalidArgError } from '../errors.js';

/**
 * TensorFlow.js is a peer dependency: ringreduce works with whichever tfjs the application has
 * (@tensorflow/tfjs, tfjs-node, tfjs-node-gpu, backend-wasm) and must share its one instance, so
 * it is required here — where the application's copy resolves — and only on first use of the
 * tfjs features. Plain collectives never load it.
 */
const require = createRequire(import.meta.url);

function load<T>(id: string): T | undefined {
  try {
    return require(id) as T;
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
