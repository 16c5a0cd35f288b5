// onnxruntime side of the export test (onnx/ort_test.go drives it).
//
//   node check.mjs MODEL.onnx INPUT.f32 N C H W OUT.f32
// Runs the model on N images (float32 NCHW, little-endian) and writes the
// "probs" output. Warnings and errors from onnxruntime go to stderr; the
// test requires it to be empty.
import * as ort from 'onnxruntime-node';
import { readFileSync, writeFileSync } from 'node:fs';

const [model, input, n, c, h, w, out] = process.argv.slice(2);
const runner = await ort.InferenceSession.create(model, {
  graphOptimizationLevel: 'all', intraOpNumThreads: 2, interOpNumThreads: 1, logSeverityLevel: 2,
});
if (runner.inputNames.join() !== 'input' || runner.outputNames.join() !== 'probs') {
  console.error(`inputs ${runner.inputNames} outputs ${runner.outputNames}`);
  process.exit(1);
}
const buf = readFileSync(input);
const x = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
const dims = [n, c, h, w].map(Number);
const res = await runner.run({ input: new ort.Tensor('float32', x, dims) });
const p = res.probs;
if (p.dims[0] !== dims[0]) {
  console.error(`probs dims ${p.dims}`);
  process.exit(1);
}
writeFileSync(out, Buffer.from(p.data.buffer, p.data.byteOffset, p.data.byteLength));
