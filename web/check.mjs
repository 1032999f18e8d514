// `node check.mjs SITE`: can the site's model.onnx run on onnxruntime-web's wasm backend? Loads it with the
// site's own gpt.js and runtime files (Node runs the same .wasm as the browser), then a prefill and a step. A site
// with the explorer's explain.onnx runs that too, on the prefill's text: its logits must be the model's.
// Prints `ok <layout>` (`ok <layout> explain` with the explorer) or one line with the reason, exit status 1.
import { access, readFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const site = path.resolve(process.argv[2] ?? '.');
const TOLERANCE = 1e-4; // export/verify.py's fp32 parity

async function checkExplain(decoder, ids, prefill) {
  const { openExplainer } = await import(pathToFileURL(path.join(site, 'explain.js')).href);
  const explainer = await openExplainer(new Uint8Array(await readFile(path.join(site, 'explain.onnx'))), decoder.meta);
  const logits = (await explainer.run(ids)).logits(ids.length - 1);
  const diff = Math.max(...logits.map((v, i) => Math.abs(v - prefill[i])));
  if (!(diff <= TOLERANCE)) {
    throw new Error(`explain.onnx is not this model: its logits differ from model.onnx's by ${diff} (re-export ` +
      'both with `python -m export.onnx --ckpt out --attention onnx --explain`)');
  }
}

try {
  const { openModel } = await import(pathToFileURL(path.join(site, 'gpt.js')).href);
  const decoder = await openModel(new Uint8Array(await readFile(path.join(site, 'model.onnx'))), 1);
  const V = decoder.vocab.length;
  const ids = [0, 1 % V];
  const prefill = Array.from(await decoder.prefill(ids));
  for (const logits of [prefill, await decoder.step(0)]) {
    if (logits.length !== V || !logits.every(Number.isFinite)) throw new Error(`logits are not ${V} finite numbers`);
  }
  const explain = await access(path.join(site, 'explain.onnx')).then(() => true, () => false);
  if (explain) await checkExplain(decoder, ids, prefill);
  console.log(`ok ${decoder.meta.layout}${explain ? ' explain' : ''}`);
} catch (e) {
  console.log(String(e?.message ?? e).split(/\s+/).join(' ').slice(0, 300));
  process.exit(1);
}
