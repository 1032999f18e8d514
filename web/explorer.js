// The explorer's views, plain DOM and canvas: for the character pointed at (hovered, or clicked to pin), the head
// view (its attention in every head of one layer, as bars under the text), the model view (every layer x head),
// one head's mechanism, the next-character distribution under the sampling settings, and the logit lens. Every
// number shown is also in a data-* attribute at full precision (tests/test_explorer.py reads them).
import { samplingProbs, softmax } from './gpt.js';

const SLIDERS = { temperature: 'temperature', topK: 'top-k (0 = off)', topP: 'top-p' };
const COLORS = ['31,119,180', '214,39,40', '44,160,44', '148,103,189', '255,127,14', '23,190,207', '140,86,75',
  '227,119,194']; // rgb, one a head
const BAR = 4; // px of each head's stripe under a character
const TOP = 10; // rows of the next-character view
const LENS_TOP = 3; // predictions per depth of the logit lens
const PACE = 4; // a pass starts once writing has run PACE x as long as the last pass took (its share <= 1/5)

const glyph = (c) => ({ ' ': '\u2423', '\n': '\u21b5', '\t': '\u21e5' })[c] ?? c; // as gpt.inspect shows them
const fmt = (x, digits = 3) => (Number.isFinite(x) ? x.toFixed(digits) : x > 0 ? '\u221e' : '\u2212\u221e');

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('data-') || k === 'class' || k === 'title') node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children);
  return node;
}

/** Indices of the n largest values, largest first (first index on ties). */
function topIndices(values, n) {
  return Array.from(values.keys()).sort((i, j) => values[j] - values[i] || i - j).slice(0, n);
}

function bar(value, color = '#555') {
  return el('span', { class: 'bar', style: `width:${(100 * Math.min(1, Math.max(0, value))).toFixed(1)}%;` +
    `background:${color}` });
}

/** A labelled vector as a strip of cells, blue for positive and red for negative, each value in data-value. */
function strip(values, name, label) {
  const peak = Math.max(1e-9, ...Array.from(values, Math.abs));
  return el('div', { class: 'strip', 'data-name': name }, el('b', {}, label), ...Array.from(values, (v) => {
    const rgb = v >= 0 ? '31,119,180' : '214,39,40';
    return el('span', { 'data-value': String(v), title: v.toFixed(4),
      style: `background:rgba(${rgb},${(Math.abs(v) / peak).toFixed(3)})` });
  }));
}

export class Explorer {
  /** `root`: the explorer's section of the page; `explainer`: explain.js's Explainer; `vocab`, `blockSize`: the
   * model's. */
  constructor(root, explainer, vocab, blockSize) {
    Object.assign(this, { root, explainer, vocab, blockSize, x: null, layer: 0, head: 0, pinned: null, hover: null });
    Object.assign(this, { cost: 0, lastEnd: 0, passes: 0 });
    const $ = (id) => root.querySelector(`#${id}`);
    this.views = { text: $('x-text'), model: $('x-model'), mech: $('x-mech'), next: $('x-next'), lens: $('x-lens'),
      title: $('x-mech-title'), layer: $('x-layer'), head: $('x-head'), on: $('x-on') };
    this.sliders = { temperature: $('x-temperature'), topK: $('x-top-k'), topP: $('x-top-p') };
    const { layer, head, text, model } = this.views;
    const meta = explainer.meta;
    layer.replaceChildren(...Array.from({ length: meta.n_layer }, (_, i) => el('option', { value: i }, `${i}`)));
    head.replaceChildren(...Array.from({ length: meta.n_head }, (_, i) => el('option', { value: i }, `${i}`)));
    this.sliders.topK.max = String(vocab.length);
    layer.addEventListener('change', () => { this.layer = Number(layer.value); this.update(); });
    head.addEventListener('change', () => { this.head = Number(head.value); this.update(); });
    for (const s of Object.values(this.sliders)) s.addEventListener('input', () => this.x && this.renderNext());
    text.addEventListener('mouseover', (e) => this.point(e.target.closest('.ch'), 'hover'));
    text.addEventListener('mouseleave', () => { this.hover = null; this.update(); });
    text.addEventListener('click', (e) => this.point(e.target.closest('.ch'), 'pin'));
    model.addEventListener('click', (e) => {
      const cell = e.target.closest('canvas');
      if (!cell) return;
      Object.assign(this, { layer: Number(cell.dataset.layer), head: Number(cell.dataset.head) });
      Object.assign(layer, { value: this.layer });
      Object.assign(head, { value: this.head });
      this.update();
    });
  }

  get enabled() { return this.views.on.checked; }

  /** The position the views show: the hovered character, else the pinned one, else the last. */
  get pos() { return Math.min(this.hover ?? this.pinned ?? Infinity, this.x.T - 1); }

  point(span, how) {
    if (!span || !this.x) return;
    const pos = Number(span.dataset.pos);
    if (how === 'pin') this.pinned = this.pinned === pos ? null : pos;
    else if (this.hover === pos) return;
    else this.hover = pos;
    this.update();
  }

  /** While writing: has writing run long enough since the last pass to pay for another? */
  due() { return performance.now() - this.lastEnd >= PACE * this.cost; }

  /** Run the explain graph on the text's last block_size ids and redraw every view. */
  async show(ids) {
    const start = performance.now();
    this.x = await this.explainer.run(ids.slice(-this.blockSize));
    this.build();
    this.update();
    void this.root.offsetHeight; // lay the page out now, so the pass's cost counts it
    this.lastEnd = performance.now();
    this.cost = this.passes === 0 ? 0 : this.lastEnd - start; // the first pass is cold (wasm kernels, first layout)
    this.root.dataset.passes = String(++this.passes);
    this.root.dataset.state = 'shown';
  }

  /** The views that depend on the text only: its characters, and the model view's heatmaps. */
  build() {
    const { x, views } = this;
    views.text.style.setProperty('--bars', `${BAR * x.H}px`);
    views.text.replaceChildren(...x.ids.map((id, i) => {
      const c = this.vocab[id];
      const span = el('span', { class: 'ch', 'data-pos': i, title: `position ${i}` }, c === '\n' ? glyph(c) : c);
      return c === '\n' ? [span, el('br')] : [span];
    }).flat());
    views.model.style.gridTemplateColumns = `auto repeat(${x.H}, 1fr)`;
    const cells = [el('span'), ...Array.from({ length: x.H }, (_, h) => el('span', { class: 'label' }, `head ${h}`))];
    for (let l = 0; l < x.L; l++) {
      cells.push(el('span', { class: 'label' }, `layer ${l}`));
      for (let h = 0; h < x.H; h++) {
        const canvas = el('canvas', { width: x.T, height: x.T, 'data-layer': l, 'data-head': h,
          title: `layer ${l}, head ${h}: rows are queries, columns keys` });
        this.heatmap(canvas, l, h);
        cells.push(el('span', { class: 'cell' }, canvas, el('i', { class: 'row' })));
      }
    }
    views.model.replaceChildren(...cells);
  }

  heatmap(canvas, layer, head) {
    const { T } = this.x;
    const ctx = canvas.getContext('2d');
    const image = ctx.createImageData(T, T);
    const pixels = new Uint32Array(image.data.buffer); // RGBA bytes, little-endian: 0xAABBGGRR
    for (let i = 0; i < T; i++) {
      const row = this.x.attentionRow(layer, head, i);
      for (let j = 0; j < T; j++) {
        const shade = 255 - Math.round(255 * Math.sqrt(row[j])); // sqrt: weak weights stay visible
        pixels[i * T + j] = 0xff000000 | (shade << 16) | (shade << 8) | shade;
      }
    }
    ctx.putImageData(image, 0, 0);
  }

  /** Redraw what depends on the pointed character, layer and head. */
  update() {
    if (!this.x) return;
    const { x, views } = this;
    const pos = this.pos;
    this.root.dataset.pos = String(pos);
    const rows = Array.from({ length: x.H }, (_, h) => x.attentionRow(this.layer, h, pos));
    const peaks = rows.map((row) => Math.max(...row));
    const stripes = rows.map((_, h) => `0 calc(100% - ${BAR * h}px)`).join(',');
    for (const span of views.text.querySelectorAll('.ch')) {
      const j = Number(span.dataset.pos);
      span.classList.toggle('pointed', j === pos);
      span.classList.toggle('pinned', j === this.pinned);
      const weights = rows.map((row) => (j <= pos ? row[j] : 0));
      span.dataset.weights = weights.join(' ');
      // one stripe a head under the character, each head's strongest weight at full colour
      span.style.backgroundImage = weights.map((w, h) => {
        const color = `rgba(${COLORS[h % COLORS.length]},${(w / peaks[h]).toFixed(3)})`;
        return `linear-gradient(${color},${color})`;
      }).join(',');
      span.style.backgroundPosition = stripes;
    }
    for (const cell of views.model.querySelectorAll('.cell')) {
      const canvas = cell.firstChild;
      const row = x.attentionRow(Number(canvas.dataset.layer), Number(canvas.dataset.head), pos);
      canvas.dataset.row = JSON.stringify(Array.from(row.subarray(0, pos + 1)));
      canvas.classList.toggle('chosen', Number(canvas.dataset.layer) === this.layer &&
        Number(canvas.dataset.head) === this.head);
      cell.lastChild.style.top = `${(100 * (pos + 0.5)) / x.T}%`;
    }
    this.renderMechanism();
    this.renderNext();
    this.renderLens();
  }

  renderMechanism() {
    const { x, layer, head } = this;
    const pos = this.pos;
    const m = x.mechanism(layer, head, pos);
    const c = glyph(this.vocab[x.ids[pos]]);
    this.views.title.textContent = `Layer ${layer}, head ${head}: how "${c}" (position ${pos}) attends`;
    const color = `rgb(${COLORS[head % COLORS.length]})`;
    const row = ({ class: kind, ...attrs }, ...cells) => el('div', { class: `mrow ${kind}`, ...attrs },
      ...cells.map((cell) => el('span', {}, cell)));
    const rows = m.scores.map((score, j) => row({
      class: m.masked[j] ? 'masked' : 'visible', 'data-key': j, 'data-score': String(score),
      'data-weight': String(m.weights[j]),
    }, `${j}`, glyph(this.vocab[x.ids[j]]), fmt(score), m.masked[j] ? '\u2212\u221e' : '0', fmt(m.weights[j], 4),
    bar(m.weights[j], color)));
    this.views.mech.replaceChildren(
      el('p', {}, `q of "${c}" (${x.D} numbers) and the head's output, the weighted sum of v (blue positive, red ` +
        'negative); below, each key: its score q\u00b7k/\u221ad, the causal mask, the softmax of the two:'),
      strip(m.q, 'q', 'q'), strip(m.out, 'out', '\u03a3 softmax\u00b7v'),
      row({ class: 'head' }, 'key', 'char', 'q\u00b7k/\u221ad', 'mask', 'softmax', ''),
      el('div', { class: 'scroll' }, ...rows));
  }

  renderNext() {
    const { x, sliders } = this;
    const logits = x.logits(this.pos);
    const params = { temperature: Number(sliders.temperature.value), topK: Number(sliders.topK.value),
      topP: Number(sliders.topP.value) };
    for (const [name, s] of Object.entries(sliders)) s.previousElementSibling.textContent = `${SLIDERS[name]} ${s.value}`;
    const model = softmax(Array.from(logits));
    const sampled = samplingProbs(logits, params);
    const rows = topIndices(model, TOP).map((id) => el('tr', {
      'data-id': id, 'data-prob': String(model[id]), 'data-sampled': String(sampled[id]),
    }, el('td', { class: 'glyph' }, glyph(this.vocab[id])), el('td', {}, fmt(model[id], 4)),
    el('td', { class: 'wide' }, bar(model[id], '#999')), el('td', {}, fmt(sampled[id], 4)),
    el('td', { class: 'wide' }, bar(sampled[id], `rgb(${COLORS[0]})`))));
    this.views.next.replaceChildren(el('thead', {}, el('tr', {}, ...['next', 'model', '', 'sampled', '']
      .map((h) => el('th', {}, h)))), el('tbody', {}, ...rows));
  }

  renderLens() {
    const depths = this.x.lensAt(this.pos);
    const rows = depths.map((probs, depth) => el('tr', { 'data-depth': depth },
      el('th', {}, depth === 0 ? 'embedding' : `block ${depth - 1}`),
      ...topIndices(probs, LENS_TOP).map((id) => el('td', { 'data-id': id, 'data-prob': String(probs[id]) },
        el('span', { class: 'glyph' }, glyph(this.vocab[id])), ` ${fmt(probs[id], 3)}`))));
    this.views.lens.replaceChildren(el('tbody', {}, ...rows));
  }
}
