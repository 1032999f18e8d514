// The page's model code, with no framework: the file's metadata, a decoder for each export layout on
// onnxruntime-web's wasm backend, the sampler, and the generation loop of gpt/decode/loop.py (same window policy
// past block_size, so greedy text equals `python -m gpt.sample --backend onnxruntime --temperature 0`).
// Runs in a browser and under Node (export.web's check of a site's model runs it there: web/check.mjs).
import * as ort from './ort.wasm.min.mjs';

export { ort };

const FORMAT_VERSION = '3'; // gpt/decode/onnx_format.py
const METADATA_KEYS = ['vocab', 'block_size', 'n_layer', 'n_head', 'n_embd', 'layout', 'format_version'];
const EXPORT_HINT = 'export one with `python -m export.onnx --ckpt out`';

/** The file's metadata_props (ModelProto field 14) from its protobuf bytes: onnxruntime-web does not expose them. */
export function readMetadataProps(bytes) {
  const text = new TextDecoder();
  const props = {};
  const varint = (buf, at) => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      if (at.i >= buf.length) throw new Error('truncated protobuf');
      const b = buf[at.i++];
      value += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return value;
    }
  };
  const fields = function* (buf) { // [field number, bytes of a length-delimited field or null]
    const at = { i: 0 };
    while (at.i < buf.length) {
      const tag = varint(buf, at);
      const wire = tag % 8;
      if (wire === 0) { varint(buf, at); yield [Math.floor(tag / 8), null]; continue; }
      const size = wire === 2 ? varint(buf, at) : wire === 1 ? 8 : wire === 5 ? 4 : NaN;
      if (Number.isNaN(size) || at.i + size > buf.length) throw new Error('not an ONNX file (bad protobuf)');
      yield [Math.floor(tag / 8), wire === 2 ? buf.subarray(at.i, at.i + size) : null];
      at.i += size;
    }
  };
  for (const [field, entry] of fields(bytes)) {
    if (field !== 14 || entry === null) continue;
    let key = '', value = '';
    for (const [f, data] of fields(entry)) {
      if (f === 1 && data) key = text.decode(data);
      if (f === 2 && data) value = text.decode(data);
    }
    props[key] = value;
  }
  return props;
}

/** What the sampler needs, from the metadata alone (as gpt.decode.onnx_format.parse_metadata), or a one-line Error. */
export function parseMetadata(props) {
  if ('format_version' in props && props.format_version !== FORMAT_VERSION) {
    throw new Error(`the model has format_version ${props.format_version}; this page reads ${FORMAT_VERSION}`);
  }
  const missing = METADATA_KEYS.filter((k) => !(k in props));
  if (missing.length) throw new Error(`the model lacks metadata ${missing.join(', ')}; ${EXPORT_HINT}`);
  if (!['gqa', 'onnx'].includes(props.layout)) throw new Error(`the model has an unknown layout ${props.layout}`);
  const meta = { vocab: JSON.parse(props.vocab), layout: props.layout, valLoss: JSON.parse(props.val_loss ?? 'null') };
  for (const k of ['block_size', 'n_layer', 'n_head', 'n_embd']) meta[k] = Number.parseInt(props[k], 10);
  meta.headDim = meta.n_embd / meta.n_head;
  return meta;
}

function inputNames(meta) {
  const past = [];
  for (let i = 0; i < meta.n_layer; i++) past.push(`past_key_values.${i}.key`, `past_key_values.${i}.value`);
  return [...(meta.layout === 'gqa' ? ['input_ids', 'attention_mask'] : ['input_ids']), ...past];
}

function outputNames(meta) {
  const present = [];
  for (let i = 0; i < meta.n_layer; i++) present.push(`present.${i}.key`, `present.${i}.value`);
  return ['logits', ...present];
}

/**
 * prefill(ids) -> logits of the last position; step(id) appends one token (batch 1). Both layouts feed each
 * call's `present.*` back as the next `past_key_values.*`: wasm copies every input into its heap anyway, so
 * gqa's shared buffer saves nothing here and costs a full block_size cache copy per step.
 */
export class Decoder {
  constructor(session, meta) {
    const expect = [inputNames(meta), outputNames(meta)];
    if (String(session.inputNames) !== String(expect[0]) || String(session.outputNames) !== String(expect[1])) {
      throw new Error(`graph inputs/outputs do not match its metadata (layout ${meta.layout}); ${EXPORT_HINT}`);
    }
    Object.assign(this, { session, meta, vocab: meta.vocab, blockSize: meta.block_size, past: null, length: 0 });
    this.pastNames = expect[0].filter((n) => n.startsWith('past_'));
    const width = meta.layout === 'gqa' ? meta.block_size : 0; // gqa: a fixed buffer; onnx: a growing cache
    const empty = new ort.Tensor('float32', new Float32Array(meta.n_head * width * meta.headDim),
      [1, meta.n_head, width, meta.headDim]);
    this.empty = this.pastNames.map(() => empty);
    this.ones = new BigInt64Array(meta.block_size).fill(1n);
  }

  async run(ids, past) {
    const total = this.length + ids.length;
    const feeds = { input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]) };
    if (this.meta.layout === 'gqa') {
      feeds.attention_mask = new ort.Tensor('int64', this.ones.subarray(0, total), [1, total]);
    }
    this.pastNames.forEach((name, i) => { feeds[name] = past[i]; });
    const out = await this.session.run(feeds);
    this.past = this.pastNames.map((_, i) => out[`present.${Math.floor(i / 2)}.${i % 2 ? 'value' : 'key'}`]);
    this.length = total;
    const V = this.vocab.length;
    return out.logits.data.subarray((ids.length - 1) * V, ids.length * V);
  }

  prefill(ids) {
    this.length = 0;
    return this.run(ids, this.empty);
  }

  step(id) {
    if (this.length + 1 > this.blockSize) throw new Error(`sequence exceeds block_size ${this.blockSize}`);
    return this.run([id], this.past);
  }
}

/** A Decoder for the model's bytes; numThreads as onnxruntime-web's env.wasm.numThreads (1 without isolation). */
export async function openModel(bytes, numThreads) {
  const meta = parseMetadata(readMetadataProps(bytes));
  if (numThreads !== undefined) ort.env.wasm.numThreads = numThreads;
  const options = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
  return new Decoder(await ort.InferenceSession.create(bytes, options), meta);
}

/** Sampling options checked as gpt.decode.sampler.SamplingParams checks them; returns an Error message or ''. */
export function checkParams({ temperature, topK, topP, seed, length }) {
  if (!(temperature >= 0)) return `temperature must be >= 0 (0 = greedy), got ${temperature}`;
  if (!(Number.isInteger(topK) && topK >= 0)) return `top-k must be an integer >= 0 (0 = off), got ${topK}`;
  if (!(topP > 0 && topP <= 1)) return `top-p must be in (0, 1], got ${topP}`;
  if (!Number.isInteger(seed)) return `seed must be an integer, got ${seed}`;
  if (!(Number.isInteger(length) && length >= 0 && length <= 1_000_000)) {
    return `length must be in [0, 1,000,000], got ${length}`;
  }
  return '';
}

/** mulberry32: a small seeded generator. Not numpy's PCG64, so sampled text differs from Python's. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function softmax(x) {
  const max = Math.max(...x);
  const e = x.map((v) => Math.exp(v - max));
  const sum = e.reduce((s, v) => s + v, 0);
  return e.map((v) => v / sum);
}

/** gpt.decode.sampler.filter_logits: -Infinity outside the top-k (exactly k, ties by index) and outside the smallest
 * set whose probability >= top_p. */
export function filterLogits(logits, topK, topP) {
  const x = Array.from(logits);
  const ranked = () => x.map((_, i) => i).sort((i, j) => x[j] - x[i] || i - j);
  if (topK > 0 && topK < x.length) ranked().slice(topK).forEach((i) => { x[i] = -Infinity; });
  if (topP < 1) {
    const order = ranked();
    const probs = softmax(order.map((i) => x[i]));
    let before = 0; // mass of the tokens ranked above each one
    order.forEach((i, r) => { if (before >= topP) x[i] = -Infinity; before += probs[r]; });
  }
  return x;
}

function argmax(x) {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** The distribution the sampler draws from (temperature, then top-k and top-p); temperature 0 is all on the argmax
 * (first on ties). The explorer shows it. */
export function samplingProbs(logits, { temperature, topK, topP }) {
  const best = argmax(logits);
  if (temperature === 0) return Array.from(logits, (_, i) => (i === best ? 1 : 0));
  return softmax(filterLogits(Array.from(logits, (v) => (v - logits[best]) / temperature), topK, topP));
}

/** Temperature, top-k and top-p as gpt.decode.sampler.Sampler does them; temperature 0 is argmax (first on ties). */
export function makeSampler({ temperature, topK, topP, seed }) {
  const rand = random(seed);
  return (logits) => {
    if (temperature === 0) return argmax(logits);
    const probs = samplingProbs(logits, { temperature, topK, topP });
    const total = probs.reduce((s, v) => s + v, 0);
    const u = rand() * total;
    let cdf = 0, token = 0;
    for (const p of probs) { cdf += p; if (cdf <= u) token++; else break; }
    return Math.min(token, probs.length - 1);
  };
}

/** Prompt ids (gpt.decode.loop.prepare_prompt): empty starts from a newline; too long keeps its tail. */
export function encodePrompt(vocab, prompt, blockSize) {
  const chars = Array.from(prompt === '' ? (vocab.includes('\n') ? '\n' : vocab[0]) : prompt);
  const unknown = [...new Set(chars.filter((c) => !vocab.includes(c)))].sort();
  if (unknown.length) {
    const shown = unknown.slice(0, 10).map((c) => JSON.stringify(c)).join(', ') + (unknown.length > 10 ? ' ...' : '');
    throw new Error(`the prompt has ${unknown.length} character(s) not in the model's vocabulary: ${shown}; ` +
      `the vocabulary is the ${vocab.length} characters of the training text`);
  }
  return chars.slice(-blockSize).map((c) => vocab.indexOf(c));
}

/** Yields `count` new token ids: gpt.decode.loop.generate for one sample, the same windows past block_size. */
export async function* generate(decoder, promptIds, count, sampler) {
  const block = decoder.blockSize;
  let window = promptIds.slice(-block);
  if (count === 0) return;
  let logits = await decoder.prefill(window);
  for (let i = 0; i < count; i++) {
    const token = sampler(logits);
    yield token;
    if (i === count - 1) break;
    window.push(token);
    if (window.length > block) {
      window = window.slice(-Math.floor(block / 2));
      logits = await decoder.prefill(window);
    } else {
      logits = await decoder.step(token);
    }
  }
}
