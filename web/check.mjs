// `node check.mjs SITE`: can the site's model.onnx run on onnxruntime-web's wasm backend? Loads it with the
// site's own gpt.js and runtime files (Node runs the same .wasm as the browser), then a prefill and a step.
// Prints `ok <layout>` or one line with the reason, exit status 1.
import { readFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const site = path.resolve(process.argv[2] ?? '.');
try {
  const { openModel } = await import(pathToFileURL(path.join(site, 'gpt.js')).href);
  const decoder = await openModel(new Uint8Array(await readFile(path.join(site, 'model.onnx'))), 1);
  const V = decoder.vocab.length;
  for (const logits of [await decoder.prefill([0, 1 % V]), await decoder.step(0)]) {
    if (logits.length !== V || !logits.every(Number.isFinite)) throw new Error(`logits are not ${V} finite numbers`);
  }
  console.log(`ok ${decoder.meta.layout}`);
} catch (e) {
  console.log(String(e?.message ?? e).split(/\s+/).join(' ').slice(0, 300));
  process.exit(1);
}
