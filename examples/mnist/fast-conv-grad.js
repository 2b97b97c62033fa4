// A faster Conv2DBackpropFilter (the weight gradient of conv2d) for tfjs' pure-JS CPU backend.
//
// Why: @tensorflow/tfjs-backend-cpu 4.22 computes this gradient with a loop that reads every
// element through TensorBuffer.get(...indices) (an array allocation and an index computation per
// multiply-add); a profile of one training step of the example CNN spends ~75% of its time there
// (TensorBuffer.get + conv2DBackpropFilter + the garbage collector), at ~2-3 million multiply-adds
// per second. This file registers a direct loop over the flat arrays instead (same result up to
// floating-point summation order: both accumulate in float64), which makes the example's training
// step several times faster.
//
// Only the 'cpu' backend is touched, only channels-last float32 inputs take the new path (anything
// else goes to the original kernel), and nothing changes for tfjs-node / tfjs-node-gpu / wasm,
// which have their own kernels. Opt out with --no-fast-conv (or FAST_CONV=0) in train.js.

const KERNEL = 'Conv2DBackpropFilter';

/** Replaces the cpu backend's Conv2DBackpropFilter; returns false if there is nothing to replace. */
export function installFastConvGrad(tf) {
  const original = tf.getKernel(KERNEL, 'cpu');
  if (!original || original.kernelFunc.fastConvGrad) return Boolean(original);
  const slow = original.kernelFunc;

  function conv2DBackpropFilterFast(args) {
    const { inputs, backend, attrs } = args;
    const { x, dy } = inputs;
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs;
    const format = tf.backend_util.convertConv2DDataFormat(dataFormat);
    if (format !== 'channelsLast' || x.dtype !== 'float32' || dy.dtype !== 'float32') return slow(args);
    const c = tf.backend_util.computeConv2DInfo(x.shape, filterShape, strides, 1, pad, dimRoundingMode, false, format);
    const xv = backend.data.get(x.dataId).values;
    const dyv = backend.data.get(dy.dataId).values;
    const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = c;
    const { strideHeight, strideWidth, filterHeight, filterWidth } = c;
    const top = c.padInfo.top;
    const left = c.padInfo.left;
    // dW[wR, wC, d1, d2] = sum over b, yR, yC of x[b, yR*sH + wR - top, yC*sW + wC - left, d1] * dy[b, yR, yC, d2]
    const acc = new Float64Array(filterHeight * filterWidth * inChannels * outChannels);
    for (let b = 0; b < batchSize; b++) {
      for (let yR = 0; yR < outHeight; yR++) {
        for (let yC = 0; yC < outWidth; yC++) {
          const dyOff = ((b * outHeight + yR) * outWidth + yC) * outChannels;
          for (let wR = 0; wR < filterHeight; wR++) {
            const xR = yR * strideHeight + wR - top;
            if (xR < 0 || xR >= inHeight) continue;
            for (let wC = 0; wC < filterWidth; wC++) {
              const xC = yC * strideWidth + wC - left;
              if (xC < 0 || xC >= inWidth) continue;
              const xOff = ((b * inHeight + xR) * inWidth + xC) * inChannels;
              let w = (wR * filterWidth + wC) * inChannels * outChannels;
              for (let d1 = 0; d1 < inChannels; d1++, w += outChannels) {
                const xval = xv[xOff + d1];
                for (let d2 = 0; d2 < outChannels; d2++) acc[w + d2] += xval * dyv[dyOff + d2];
              }
            }
          }
        }
      }
    }
    return backend.makeTensorInfo(c.filterShape, 'float32', Float32Array.from(acc));
  }
  conv2DBackpropFilterFast.fastConvGrad = true;

  tf.unregisterKernel(KERNEL, 'cpu');
  tf.registerKernel({ ...original, kernelFunc: conv2DBackpropFilterFast });
  return true;
}
