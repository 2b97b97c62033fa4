import type * as TfCore from '@tensorflow/tfjs-core';
import type * as TfLayers from '@tensorflow/tfjs-layers';

type Tensor = TfCore.Tensor;
/** Per-example values of a loss or metric: (yTrue, yPred) -> Tensor of shape [batch] (or more). */
export type LossOrMetricFn = (yTrue: Tensor, yPred: Tensor) => Tensor;

/** The losses `model.compile` knows by name that a pipeline takes by name (the same functions). */
export const LOSSES = ['categoricalCrossentropy', 'binaryCrossentropy', 'meanSquaredError', 'mse', 'meanAbsoluteError', 'mae'] as const;
/** Metrics by name; 'accuracy'/'acc' follow the loss as in tfjs (categorical, binary). Logged as model.fit does ('acc'). */
export const METRICS = ['accuracy', 'acc', 'mse', 'meanSquaredError', 'mae', 'meanAbsoluteError'] as const;

export function lossFn(tfl: typeof TfLayers, loss: string | LossOrMetricFn): LossOrMetricFn {
  if (typeof loss === 'function') return loss;
  const m = tfl.metrics;
  switch (loss) {
    case 'categoricalCrossentropy':
      return m.categoricalCrossentropy;
    case 'binaryCrossentropy':
      return m.binaryCrossentropy;
    case 'meanSquaredError':
    case 'mse':
      return m.meanSquaredError;
    case 'meanAbsoluteError':
    case 'mae':
      return m.meanAbsoluteError;
  }
  throw new Error(`unknown loss ${loss}`);
}

/** [log key, function] of a metric, as model.fit names it. */
export function metricFn(tfl: typeof TfLayers, metric: string, loss: string | LossOrMetricFn): [string, LossOrMetricFn] {
  const m = tfl.metrics;
  switch (metric) {
    case 'accuracy':
    case 'acc':
      return ['acc', loss === 'binaryCrossentropy' ? m.binaryAccuracy : m.categoricalAccuracy];
    case 'mse':
    case 'meanSquaredError':
      return [metric, m.meanSquaredError];
    case 'mae':
    case 'meanAbsoluteError':
      return [metric, m.meanAbsoluteError];
  }
  throw new Error(`unknown metric ${metric}`);
}
