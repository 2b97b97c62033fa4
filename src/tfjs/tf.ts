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

let data: typeof TfData | undefined | null = null;

export function needData(what: string): typeof TfData {
  if (data === null) data = load('@tensorflow/tfjs-data');
  if (!data) throw new RingInvalidArgError(`${what} needs @tensorflow/tfjs-data (part of @tensorflow/tfjs and tfjs-node)`);
  return data;
}
