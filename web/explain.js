// The explorer's numbers, with no DOM: the explain graph (`export.onnx --explain`, export/explain.py) run on a whole
// text, and what each view reads from its outputs. Runs in a browser and under Node (web/check.mjs).
import { ort, softmax } from './gpt.js';

const OUTPUTS = ['logits', 'q', 'k', 'v', 'attention', 'lens'];

/** One text's pass: flat Float32Arrays of the graph's outputs, read by (layer, head, position). */
export class Explanation {
  constructor(ids, out, meta) {
    const T = ids.length;
    Object.assign(this, { ids, T, L: meta.n_layer, H: meta.n_head, D: meta.headDim, V: meta.vocab.length });
    this.data = Object.fromEntries(OUTPUTS.map((name) => [name, out[name].data]));
  }

  /** Attention of query `pos` in (layer, head) over keys 0..T-1 (zero past `pos`: the causal mask). */
  attentionRow(layer, head, pos) {
    const at = ((layer * this.H + head) * this.T + pos) * this.T;
    return this.data.attention.subarray(at, at + this.T);
  }

  vector(name, layer, head, pos) {
    const at = ((layer * this.H + head) * this.T + pos) * this.D;
    return this.data[name].subarray(at, at + this.D);
  }

  /** One head's arithmetic for query `pos`, from its q, k and v: scores q·k/√d, the mask, their softmax (computed
   * here, so it can be checked against the graph's `attention`), and the weighted sum of v. */
  mechanism(layer, head, pos) {
    const q = this.vector('q', layer, head, pos);
    const scale = 1 / Math.sqrt(this.D);
    const scores = [];
    for (let j = 0; j < this.T; j++) {
      const k = this.vector('k', layer, head, j);
      let dot = 0;
      for (let d = 0; d < this.D; d++) dot += q[d] * k[d];
      scores.push(dot * scale);
    }
    const masked = scores.map((_, j) => j > pos);
    const weights = softmax(scores.map((s, j) => (masked[j] ? -Infinity : s)));
    const out = new Float64Array(this.D);
    for (let j = 0; j <= pos; j++) {
      const v = this.vector('v', layer, head, j);
      for (let d = 0; d < this.D; d++) out[d] += weights[j] * v[d];
    }
    return { q, scores, masked, weights, out };
  }

  /** The model's logits for the character after `pos`. */
  logits(pos) {
    return this.data.logits.subarray(pos * this.V, (pos + 1) * this.V);
  }

  /** The logit lens at `pos`: next-character probabilities after the embedding (depth 0) and after each block. */
  lensAt(pos) {
    return Array.from({ length: this.L + 1 }, (_, depth) => {
      const at = (depth * this.T + pos) * this.V;
      return this.data.lens.subarray(at, at + this.V);
    });
  }
}

/** The explain graph of a model: run(ids) -> Explanation. */
export class Explainer {
  constructor(session, meta) {
    if (String(session.outputNames) !== String(OUTPUTS)) {
      throw new Error(`explain.onnx has outputs ${session.outputNames}, not ${OUTPUTS}; re-export it with ` +
        '`python -m export.onnx --ckpt out --attention onnx --explain`');
    }
    Object.assign(this, { session, meta });
  }

  async run(ids) {
    const input = new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]);
    const out = await this.session.run({ input_ids: input });
    return new Explanation(ids, out, this.meta);
  }
}

/** An Explainer for explain.onnx's bytes; `meta` is the sampling file's (parseMetadata). */
export async function openExplainer(bytes, meta) {
  const options = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
  return new Explainer(await ort.InferenceSession.create(bytes, options), meta);
}
