// The waveform on ACE-Step Load Audio, Save Audio and Preview Audio: the audio ComfyUI serves at /view, decoded in
// the browser (Web Audio), with play/pause and a playhead, zoom and a seconds ruler. On the loader it is also the
// editor of its `regions` input: drag to mark parts to regenerate, drag the edges to adjust them, drag past either
// end of the song to extend it. Edges snap to ACE-Step's latent frames (4096 samples at 44.1 kHz), so what is
// marked is exactly what ACE-Step Mask from Seconds regenerates.
//
// Public frontend API only: app.registerExtension (setup, nodeCreated), node.addDOMWidget, the core audio
// player widget (`audioUI`, an <audio> element whose src ComfyUI sets) and api.apiURL. Without them, or without
// Web Audio, the nodes keep their plain inputs and the console says why, once.

import { api } from '../../scripts/api.js';
import { app } from '../../scripts/app.js';
import * as R from './regions.js';
import { addStyle, firstMissing, forwardCanvasGestures, sayOnce } from './support.js';

const NODES = new Set(['AceStepLoadAudio', 'AceStepSaveAudio', 'AceStepPreviewAudio']);
const WIDGET = 'waveform'; // our DOM widget's name
const RULER = 18; // px: the seconds ruler at the top
const BUCKET = 256; // samples per precomputed peak
const MAX_EXTEND_FRAMES = R.framesForSeconds(240); // official extend window
const EDGE_GRAB = 6; // px around a region edge that grabs it
const COLORS = {
  // as nodes/visualize.py draws its waveform images
  background: '#13161b',
  outside: '#0c0e11',
  hatch: '#1b1f26',
  peak: '#348ab9',
  rms: '#8fd6fc',
  midline: '#383f4c',
  grid: 'rgba(255,255,255,0.07)',
  ruler: '#1b1f26',
  rulerText: '#9aa4b2',
  repaint: 'rgba(255,166,0,0.22)',
  repaintEdge: '#ffa600',
  extend: 'rgba(111,220,140,0.22)',
  extendEdge: '#6fdc8c',
  playhead: '#ffffff',
  hover: 'rgba(255,255,255,0.45)',
  text: '#e6e9ef'
};

const CSS = `
.acestep-wave { display: flex; flex-direction: column; gap: 3px; box-sizing: border-box; padding: 2px 0;
  font: 11px system-ui, sans-serif; color: var(--input-text, #ddd); user-select: none; }
.acestep-wave .bar { display: flex; align-items: center; gap: 3px; flex: none; height: 22px; }
.acestep-wave button { background: var(--comfy-input-bg, #222); color: inherit; border: 1px solid
  var(--border-color, #444); border-radius: 4px; height: 20px; min-width: 24px; padding: 0 6px; cursor: pointer;
  font: inherit; line-height: 16px; }
.acestep-wave button:hover { filter: brightness(1.4); }
.acestep-wave button:disabled { opacity: 0.4; cursor: default; filter: none; }
.acestep-wave .time { font-variant-numeric: tabular-nums; margin: 0 4px; white-space: nowrap; }
.acestep-wave .spacer { flex: 1; }
.acestep-wave .view { position: relative; flex: 1 1 auto; min-height: 60px; }
.acestep-wave canvas { position: absolute; inset: 0; width: 100%; height: 100%; border-radius: 4px;
  touch-action: none; cursor: crosshair; display: block; }
.acestep-wave .status { flex: none; height: 15px; line-height: 15px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; opacity: 0.85; font-variant-numeric: tabular-nums; }
.acestep-wave .status.error { color: #ff7b72; opacity: 1; }
`;

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

function clock(s) {
  const sign = s < 0 ? '-' : '';
  s = Math.abs(s);
  const m = Math.floor(s / 60);
  return `${sign}${m}:${(s - m * 60).toFixed(1).padStart(4, '0')}`;
}

const fixed = (s) => String(Number(s.toFixed(2)));

/** Min/max/mean-square per BUCKET samples over all channels, for drawing any zoom level quickly. */
class Peaks {
  constructor(buffer) {
    this.rate = buffer.sampleRate;
    this.length = buffer.length;
    this.channels = Array.from({ length: buffer.numberOfChannels }, (_, c) => buffer.getChannelData(c));
    const n = Math.ceil(this.length / BUCKET);
    this.min = new Float32Array(n).fill(Infinity);
    this.max = new Float32Array(n).fill(-Infinity);
    this.power = new Float32Array(n);
    for (const data of this.channels) {
      for (let j = 0; j < n; j++) {
        let lo = Infinity;
        let hi = -Infinity;
        let p = 0;
        const end = Math.min(this.length, (j + 1) * BUCKET);
        for (let i = j * BUCKET; i < end; i++) {
          const v = data[i];
          if (v < lo) lo = v;
          if (v > hi) hi = v;
          p += v * v;
        }
        if (lo < this.min[j]) this.min[j] = lo;
        if (hi > this.max[j]) this.max[j] = hi;
        this.power[j] += p / (end - j * BUCKET) / this.channels.length;
      }
    }
  }

  /** [min, max, rms] of samples [i0, i1) (i0 < i1). */
  range(i0, i1) {
    let lo = Infinity;
    let hi = -Infinity;
    let p = 0;
    let n = 0;
    if (i1 - i0 >= 2 * BUCKET) {
      for (let j = Math.floor(i0 / BUCKET); j < Math.ceil(i1 / BUCKET); j++) {
        lo = Math.min(lo, this.min[j]);
        hi = Math.max(hi, this.max[j]);
        p += this.power[j];
        n++;
      }
    } else {
      for (const data of this.channels) {
        for (let i = i0; i < i1; i++) {
          const v = data[i];
          if (v < lo) lo = v;
          if (v > hi) hi = v;
          p += v * v;
          n++;
        }
      }
    }
    return [lo, hi, Math.sqrt(p / Math.max(n, 1))];
  }

  /** The loudest sample of [i0, i1). */
  peak(i0, i1) {
    const [lo, hi] = this.range(i0, i1);
    return Math.max(Math.abs(lo), Math.abs(hi));
  }
}

async function decode(url, signal) {
  const response = await fetch(url, { signal });
  if (!response.ok) throw new Error(`cannot load the file (${response.status} ${response.statusText})`);
  const data = await response.arrayBuffer();
  // Decoding resamples to the context's rate: 44.1 kHz, the DCAE's, so samples map straight onto latent frames.
  try {
    return await new OfflineAudioContext(1, 1, R.SAMPLE_RATE).decodeAudioData(data);
  } catch (error) {
    throw new Error(`the browser cannot decode this file's audio (${error.message ?? error})`);
  }
}

class WaveformEditor {
  constructor(node, player) {
    this.node = node;
    this.player = player.element; // ComfyUI's <audio> element: it plays, we show and seek
    this.regionsWidget = node.widgets?.find((w) => w.name === 'regions') ?? null;
    this.peaks = null;
    this.state = 'empty'; // empty | loading | ready | error
    this.src = '';
    this.zoom = 1;
    this.center = 0; // s: middle of the view when zoomed in
    this.regions = [];
    this.text = null; // the regions text last read or written
    this.regionsError = null;
    this.drag = null;
    this.hover = null; // frame under the pointer
    this.message = '';

    this.element = this.#build();
    this.observer = new MutationObserver(() => this.#sourceChanged());
    this.observer.observe(this.player, { attributes: true, attributeFilter: ['src'] });
    for (const type of ['play', 'pause', 'ended', 'seeked', 'timeupdate'])
      this.player.addEventListener(type, this.onPlayer);
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(this.canvas);
    this.#sourceChanged();
  }

  // --- the song ---

  /** The loaded part of the file, in 44.1 kHz samples: the loader's start_seconds/duration_seconds. */
  get crop() {
    const length = this.peaks?.length ?? 0;
    const value = (name) => Number(this.node.widgets?.find((w) => w.name === name)?.value) || 0;
    const first = clamp(Math.trunc(value('start_seconds') * R.SAMPLE_RATE), 0, length);
    const duration = value('duration_seconds');
    const last = duration > 0 ? Math.min(length, first + Math.trunc(duration * R.SAMPLE_RATE)) : length;
    return [first, last];
  }

  get duration() {
    const [first, last] = this.crop;
    return (last - first) / R.SAMPLE_RATE;
  }

  /** Latent frames of the loaded part, as ACE-Step Audio to Latent makes them. */
  get frames() {
    const [first, last] = this.crop;
    return R.framesForSamples(last - first);
  }

  /** Regions can be drawn: on the loader, once the song is decoded, and while `regions` is not linked. */
  get editable() {
    if (this.regionsWidget === null || this.state !== 'ready') return false;
    return this.node.inputs?.find((i) => i.widget?.name === 'regions')?.link == null;
  }

  /** The file to show: on the loader the one its `audio` input names (as the node will read it), elsewhere the
   * one ComfyUI's player was given after a run. */
  get source() {
    const file = this.node.widgets?.find((w) => w.name === 'audio' && w.type === 'combo')?.value;
    if (typeof file !== 'string') return this.player.getAttribute('src') || '';
    if (!file) return '';
    const cut = file.lastIndexOf('/');
    const params = new URLSearchParams({
      filename: file.slice(cut + 1),
      type: 'input',
      subfolder: cut < 0 ? '' : file.slice(0, cut)
    });
    return api.apiURL(`/view?${params}`);
  }

  async #sourceChanged() {
    const src = this.source;
    if (src === this.src) return;
    this.src = src;
    this.abort?.abort();
    this.peaks = null;
    if (!src) {
      this.#setState('empty');
      return;
    }
    // keep ComfyUI's player on the same file (a value set by a script does not tell it)
    if (this.player.getAttribute('src') !== src && !this.player.src.includes(src.split('&rand=')[0])) {
      this.player.src = src;
    }
    this.#setState('loading');
    const abort = (this.abort = new AbortController());
    try {
      const buffer = await decode(src, abort.signal);
      if (abort.signal.aborted) return;
      this.peaks = new Peaks(buffer);
      this.zoom = 1;
      this.text = null; // re-read the regions against this song's length
      this.#setState('ready');
    } catch (error) {
      if (abort.signal.aborted) return;
      this.#setState('error', `No waveform: ${error.message ?? error}. The node still reads the file.`);
    }
  }

  #setState(state, message = '') {
    this.state = state;
    this.message = message;
    this.element.dataset.state = state;
    this.draw();
  }

  // --- regions <-> the `regions` widget ---

  /** Follow the widget when it changes elsewhere (typed, a workflow loaded, undo). Cheap: called every frame. */
  syncFromWidget() {
    if (this.source !== this.src) this.#sourceChanged();
    if (this.state !== 'ready' || this.drag) return;
    const crop = this.crop.join();
    if (crop !== this.shownCrop) {
      // start_seconds / duration_seconds changed: another part of the file, other frames
      this.shownCrop = crop;
      this.text = null;
      this.draw();
    }
    if (!this.regionsWidget) return;
    const text = String(this.regionsWidget.value ?? '');
    if (text === this.text) return;
    this.text = text;
    const { regions, error } = R.parseRegions(text, this.frames);
    this.regions = error ? [] : regions;
    this.regionsError = error;
    this.draw();
  }

  #commit() {
    this.regions = R.normalizeRegions(this.regions, this.frames);
    const text = R.formatRegions(this.regions, this.frames);
    this.regionsError = null;
    this.text = text;
    if (this.regionsWidget.value !== text) {
      this.node.graph?.beforeChange?.();
      this.regionsWidget.value = text;
      this.regionsWidget.callback?.(text, app.canvas, this.node);
      this.node.graph?.afterChange?.();
      this.node.setDirtyCanvas?.(true, true);
    }
    this.draw();
  }

  // --- view ---

  /** The whole timeline at zoom 1: the song, any extension, and a margin to drag into. */
  get domain() {
    const { left, right } = R.extension(this.regions, this.frames);
    const end = Math.max(this.duration, R.secondsOf(this.frames + right));
    const margin = Math.max(0.5, 0.06 * this.duration);
    return [-R.secondsOf(left) - margin, end + margin];
  }

  get view() {
    if (this.drag?.view) return this.drag.view; // fixed while dragging (an extension widens the domain)
    const [d0, d1] = this.domain;
    const span = (d1 - d0) / this.zoom;
    const c = clamp(this.center, d0 + span / 2, d1 - span / 2);
    return [c - span / 2, c + span / 2];
  }

  /** Canvas x (CSS px) of time t (s), and back. */
  xOf(t) {
    const [t0, t1] = this.view;
    return ((t - t0) / (t1 - t0)) * this.canvas.clientWidth;
  }

  timeAt(x) {
    const [t0, t1] = this.view;
    return t0 + (x / this.canvas.clientWidth) * (t1 - t0);
  }

  /** The latent frame boundary nearest to canvas x, inside the allowed timeline. */
  frameAt(x) {
    const k = Math.round(this.timeAt(x) / R.FRAME_SECONDS);
    return clamp(k, -MAX_EXTEND_FRAMES, this.frames + MAX_EXTEND_FRAMES);
  }

  setZoom(zoom, aroundX = this.canvas.clientWidth / 2) {
    const t = this.timeAt(aroundX);
    const [v0, v1] = this.view;
    const [d0, d1] = this.domain;
    this.zoom = clamp(zoom, 1, Math.max(1, (d1 - d0) / (R.FRAME_SECONDS * 8))); // down to ~8 frames wide
    const span = (d1 - d0) / this.zoom;
    // keep the time under the pointer where it is
    this.center = t - (aroundX / this.canvas.clientWidth - 0.5) * span;
    if (this.zoom === 1) this.center = (d0 + d1) / 2;
    if (v0 !== this.view[0] || v1 !== this.view[1]) this.draw();
    this.#updateBar();
  }

  // --- DOM ---

  #build() {
    const root = document.createElement('div');
    root.className = 'acestep-wave';
    const bar = document.createElement('div');
    bar.className = 'bar';
    const button = (label, title, onClick) => {
      const b = document.createElement('button');
      b.textContent = label;
      b.title = title;
      b.addEventListener('click', (e) => {
        e.stopPropagation();
        onClick();
      });
      bar.appendChild(b);
      return b;
    };
    this.playButton = button('▶', 'Play / pause', () => this.togglePlay());
    this.playButton.dataset.role = 'play';
    this.time = document.createElement('span');
    this.time.className = 'time';
    bar.appendChild(this.time);
    const spacer = document.createElement('span');
    spacer.className = 'spacer';
    bar.appendChild(spacer);
    this.zoomOut = button('−', 'Zoom out (or the mouse wheel)', () => this.setZoom(this.zoom / 2));
    this.zoomFit = button('fit', 'Show the whole song', () => this.setZoom(1));
    this.zoomIn = button('+', 'Zoom in (or the mouse wheel)', () => this.setZoom(this.zoom * 2));
    this.zoomIn.dataset.role = 'zoom-in';
    if (this.regionsWidget) {
      this.clearButton = button('clear', 'Remove all regions', () => {
        this.regions = [];
        this.#commit();
      });
    }
    root.appendChild(bar);

    const view = document.createElement('div');
    view.className = 'view';
    this.canvas = document.createElement('canvas');
    view.appendChild(this.canvas);
    root.appendChild(view);
    this.status = document.createElement('div');
    this.status.className = 'status';
    root.appendChild(this.status);

    const c = this.canvas;
    c.addEventListener('pointerdown', (e) => this.#pointerDown(e));
    c.addEventListener('pointermove', (e) => this.#pointerMove(e));
    c.addEventListener('pointerup', (e) => this.#pointerUp(e));
    c.addEventListener('pointercancel', () => {
      this.drag = null;
      this.text = null; // drop the unfinished edit: re-read the widget
      this.syncFromWidget();
    });
    c.addEventListener('pointerleave', () => {
      this.hover = null;
      this.draw();
    });
    c.addEventListener('dblclick', (e) => this.#doubleClick(e));
    c.addEventListener('wheel', (e) => this.#wheel(e), { passive: false });
    forwardCanvasGestures(c, app);
    return root;
  }

  #updateBar() {
    const playing = !this.player.paused;
    this.playButton.textContent = playing ? '❚❚' : '▶';
    this.playButton.disabled = this.state !== 'ready';
    const now = clamp(this.player.currentTime - this.crop[0] / R.SAMPLE_RATE, 0, this.duration);
    this.time.textContent = this.state === 'ready' ? `${clock(now)} / ${clock(this.duration)}` : '';
    this.zoomIn.disabled = this.zoomOut.disabled = this.zoomFit.disabled = this.state !== 'ready';
    if (this.clearButton) this.clearButton.disabled = !this.editable || this.regions.length === 0;
    this.#updateStatus();
  }

  #updateStatus() {
    let text = '';
    let error = false;
    if (this.state === 'empty') {
      text = this.regionsWidget ? 'Pick or upload an audio file.' : 'Run the graph to see and hear the audio.';
    } else if (this.state === 'loading') {
      text = 'Decoding…';
    } else if (this.state === 'error') {
      text = this.message;
      error = true;
    } else if (this.drag?.kind === 'region' || this.drag?.kind === 'edge') {
      const { a, b } = this.drag.region;
      const [lo, hi] = [Math.min(a, b), Math.max(a, b)];
      const frames = this.frames;
      const at = (k) =>
        k < 0 ? `-${R.frameText(-k)}` : k > frames ? `end+${R.frameText(k - frames)}` : R.frameText(k);
      text = `${at(lo)} – ${at(hi)} s · latent frames ${lo}…${hi - 1} (${hi - lo})`;
    } else if (this.regionsError) {
      text = `regions: ${this.regionsError}`;
      error = true;
    } else if (this.hover !== null) {
      const k = this.hover;
      text = `${k < 0 ? '-' : ''}${R.frameText(Math.abs(k))} s · latent frame boundary ${k}`;
    } else if (this.regionsWidget) {
      const { left, right } = R.extension(this.regions, this.frames);
      const inside = this.regions.reduce(
        (n, { a, b }) => n + Math.max(0, Math.min(b, this.frames) - Math.max(a, 0)),
        0
      );
      const parts = [];
      if (inside) parts.push(`regenerate ${fixed(R.secondsOf(inside))} s`);
      if (left) parts.push(`+${R.frameText(left)} s before`);
      if (right) parts.push(`+${R.frameText(right)} s after`);
      text = parts.length
        ? parts.join(' · ')
        : 'Drag to mark what to regenerate; drag past an end to extend. Edges snap to latent frames.';
    }
    this.status.textContent = text;
    this.status.classList.toggle('error', error);
  }

  togglePlay() {
    if (this.state !== 'ready') return;
    if (this.player.paused) {
      const [first, last] = this.crop.map((i) => i / R.SAMPLE_RATE);
      if (this.player.currentTime < first || this.player.currentTime >= last) this.player.currentTime = first;
      this.player.play().catch((error) => {
        this.message = `cannot play: ${error.message ?? error}`;
        this.status.textContent = this.message;
      });
    } else {
      this.player.pause();
    }
  }

  onPlayer = () => {
    this.#updateBar();
    this.draw();
    if (!this.player.paused && !this.raf) {
      const tick = () => {
        // the loader reads only [start, start + duration): stop there
        if (this.player.currentTime >= this.crop[1] / R.SAMPLE_RATE) this.player.pause();
        this.raf = this.player.paused || !this.element.isConnected ? null : requestAnimationFrame(tick);
        this.#updateBar();
        this.draw();
      };
      this.raf = requestAnimationFrame(tick);
    }
  };

  seek(x) {
    const t = clamp(this.timeAt(x), 0, this.duration);
    this.player.currentTime = this.crop[0] / R.SAMPLE_RATE + t;
    this.#updateBar();
    this.draw();
  }

  // --- pointer ---

  #local(e) {
    const rect = this.canvas.getBoundingClientRect();
    // the graph may be zoomed: the canvas' CSS size is scaled by the DOM widget's transform
    return [
      ((e.clientX - rect.left) * this.canvas.clientWidth) / rect.width,
      ((e.clientY - rect.top) * this.canvas.clientHeight) / rect.height
    ];
  }

  /** What is under canvas point (x, y): {kind: 'close'|'edge'|'inside', index, edge} or null. */
  #hit(x, y) {
    for (const [index, r] of this.regions.entries()) {
      const x0 = this.xOf(R.secondsOf(r.a));
      const x1 = this.xOf(R.secondsOf(r.b));
      if (x1 - x0 > 34 && y >= RULER + 2 && y <= RULER + 16 && x >= x1 - 16 && x <= x1 - 2)
        return { kind: 'close', index };
    }
    let best = null;
    for (const [index, r] of this.regions.entries()) {
      for (const edge of ['a', 'b']) {
        const d = Math.abs(this.xOf(R.secondsOf(r[edge])) - x);
        if (d <= EDGE_GRAB && (!best || d < best.d)) best = { kind: 'edge', index, edge, d };
      }
    }
    if (best) return best;
    for (const [index, r] of this.regions.entries()) {
      if (x >= this.xOf(R.secondsOf(r.a)) && x <= this.xOf(R.secondsOf(r.b))) return { kind: 'inside', index };
    }
    return null;
  }

  #pointerDown(e) {
    if (e.button !== 0 || this.state !== 'ready') return;
    e.preventDefault();
    e.stopPropagation();
    const [x, y] = this.#local(e);
    this.canvas.setPointerCapture(e.pointerId);
    const view = this.view;
    if (y < RULER || !this.editable) {
      this.drag = { kind: 'seek', view };
      this.seek(x);
      return;
    }
    const hit = this.#hit(x, y);
    if (hit?.kind === 'close') {
      this.regions.splice(hit.index, 1);
      this.#commit();
      return;
    }
    if (hit?.kind === 'edge') {
      const region = this.regions[hit.index];
      this.drag = { kind: 'edge', region, edge: hit.edge, x0: x, view };
      return;
    }
    const k = this.frameAt(x);
    const region = { a: k, b: k };
    this.regions.push(region);
    this.drag = { kind: 'region', region, x0: x, view };
    this.draw();
  }

  #pointerMove(e) {
    const [x, y] = this.#local(e);
    if (!this.drag) {
      if (this.state !== 'ready') return;
      const hit = this.editable && y >= RULER ? this.#hit(x, y) : null;
      const cursor = { edge: 'ew-resize', close: 'pointer' }[hit?.kind] ?? 'crosshair';
      this.canvas.style.cursor = y < RULER || !this.editable ? 'pointer' : cursor;
      this.hover = this.frameAt(x);
      this.#updateStatus();
      this.draw();
      return;
    }
    if (this.drag.kind === 'seek') {
      this.seek(x);
      return;
    }
    const k = this.frameAt(x);
    if (this.drag.kind === 'region') this.drag.region.b = k;
    else this.drag.region[this.drag.edge] = k;
    this.hover = k;
    this.#updateStatus();
    this.draw();
  }

  #pointerUp(e) {
    const drag = this.drag;
    if (!drag) return;
    this.drag = null;
    this.canvas.releasePointerCapture?.(e.pointerId);
    if (drag.kind === 'seek') return;
    const [x] = this.#local(e);
    if (drag.kind === 'region' && (Math.abs(x - drag.x0) < 3 || drag.region.a === drag.region.b)) {
      // a click, not a drag: play from there
      this.regions.splice(this.regions.indexOf(drag.region), 1);
      this.seek(x);
      this.draw();
      return;
    }
    this.#commit();
  }

  #doubleClick(e) {
    if (!this.editable) return;
    const [x, y] = this.#local(e);
    const hit = y >= RULER ? this.#hit(x, y) : null;
    if (hit && hit.kind !== 'close') {
      this.regions.splice(hit.index, 1);
      this.#commit();
    }
  }

  #wheel(e) {
    if (this.state !== 'ready') return;
    if (e.ctrlKey || e.metaKey) {
      // pinch / ctrl+wheel: zoom the graph, as over ComfyUI's own text boxes
      e.preventDefault();
      app.canvas?.processMouseWheel?.(e);
      return;
    }
    e.preventDefault();
    e.stopPropagation();
    const [x] = this.#local(e);
    if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
      const [t0, t1] = this.view;
      const delta = e.shiftKey ? e.deltaY || e.deltaX : e.deltaX;
      this.center = (t0 + t1) / 2 + (delta / this.canvas.clientWidth) * (t1 - t0);
      this.draw();
      return;
    }
    this.setZoom(this.zoom * Math.pow(2, -e.deltaY / 300), x);
  }

  // --- drawing ---

  draw() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = null;
      this.#draw();
    });
  }

  /** Draw now (the tests read the pixels right after). */
  drawNow() {
    if (this.pending) cancelAnimationFrame(this.pending);
    this.pending = null;
    this.#draw();
  }

  #draw() {
    const c = this.canvas;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!w || !h) return;
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = COLORS.background;
    ctx.fillRect(0, 0, w, h);
    this.syncFromWidget();
    this.#updateBar();
    if (this.state !== 'ready') {
      ctx.fillStyle = COLORS.rulerText;
      ctx.font = '12px system-ui, sans-serif';
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      const text = { empty: '', loading: 'decoding…', error: 'cannot show this audio' }[this.state];
      ctx.fillText(text, w / 2, h / 2);
      return;
    }
    const top = RULER;
    this.#drawOutside(ctx, w, h, top);
    this.#drawGrid(ctx, w, h, top);
    ctx.drawImage(this.#waveLayer(w, h, top, dpr), 0, 0, w, h);
    this.#drawRegions(ctx, h, top);
    this.#drawRuler(ctx, w);
    if (this.hover !== null) {
      const x = Math.round(this.xOf(R.secondsOf(this.hover))) + 0.5;
      ctx.strokeStyle = COLORS.hover;
      ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, h);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    const now = this.player.currentTime - this.crop[0] / R.SAMPLE_RATE;
    if (now > 0 || !this.player.paused) {
      const x = Math.round(this.xOf(now)) + 0.5;
      ctx.strokeStyle = COLORS.playhead;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x, 0);
      ctx.lineTo(x, h);
      ctx.stroke();
      ctx.fillStyle = COLORS.playhead;
      ctx.beginPath();
      ctx.moveTo(x - 5, 0);
      ctx.lineTo(x + 5, 0);
      ctx.lineTo(x, 6);
      ctx.fill();
    }
  }

  /** Outside the song (before 0, after its end): darker and hatched, the room to drag an extension into. */
  #drawOutside(ctx, w, h, top) {
    const spans = [
      [0, this.xOf(0)],
      [this.xOf(this.duration), w]
    ];
    for (const [a, b] of spans) {
      if (b <= a) continue;
      ctx.save();
      ctx.fillStyle = COLORS.outside;
      ctx.fillRect(a, top, b - a, h - top);
      ctx.beginPath();
      ctx.rect(a, top, b - a, h - top);
      ctx.clip();
      ctx.strokeStyle = COLORS.hatch;
      ctx.beginPath();
      for (let x = Math.floor((a - h) / 8) * 8; x < b; x += 8) {
        ctx.moveTo(x, h);
        ctx.lineTo(x + h - top, top);
      }
      ctx.stroke();
      ctx.restore();
    }
  }

  /** The latent frame grid, once frames are wide enough to see (that is where edges snap). */
  #drawGrid(ctx, w, h, top) {
    const pxPerFrame = this.xOf(R.FRAME_SECONDS) - this.xOf(0);
    if (pxPerFrame < 6) return;
    const [t0, t1] = this.view;
    ctx.strokeStyle = COLORS.grid;
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let k = Math.floor(t0 / R.FRAME_SECONDS); k <= Math.ceil(t1 / R.FRAME_SECONDS); k++) {
      const x = Math.round(this.xOf(R.secondsOf(k))) + 0.5;
      ctx.moveTo(x, top);
      ctx.lineTo(x, h);
    }
    ctx.stroke();
  }

  /** The waveform itself, drawn once per view and size (playback only moves the playhead over it). */
  #waveLayer(w, h, top, dpr) {
    const [t0, t1] = this.view;
    const [first, last] = this.crop;
    const key = `${t0},${t1},${w},${h},${dpr},${first},${last},${this.src}`;
    if (this.layer?.key === key) return this.layer.canvas;
    const canvas = this.layer?.canvas ?? document.createElement('canvas');
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const mid = (top + h) / 2;
    const peak = last > first ? this.peaks.peak(first, last) : 0;
    const scale = ((h - top) / 2 - 2) * (peak > 0 ? 0.95 / peak : 1);
    ctx.fillStyle = COLORS.midline;
    const [m0, m1] = [Math.max(0, this.xOf(0)), Math.min(w, this.xOf(this.duration))];
    ctx.fillRect(m0, Math.round(mid), m1 - m0, 1);
    const perPx = ((t1 - t0) / w) * R.SAMPLE_RATE;
    for (let x = 0; x < w; x++) {
      const i0 = Math.max(first, first + Math.floor((t0 * R.SAMPLE_RATE) + x * perPx));
      const i1 = Math.min(last, first + Math.floor((t0 * R.SAMPLE_RATE) + (x + 1) * perPx));
      if (i1 <= i0) {
        if (i0 >= last) break;
        continue;
      }
      const [lo, hi, rms] = this.peaks.range(i0, Math.max(i1, i0 + 1));
      const yTop = mid - hi * scale;
      const yBottom = mid - lo * scale;
      ctx.fillStyle = COLORS.peak;
      ctx.fillRect(x, yTop, 1, Math.max(1, yBottom - yTop));
      const r = Math.min(rms, hi, -lo) * scale;
      if (r > 0.5) {
        ctx.fillStyle = COLORS.rms;
        ctx.fillRect(x, mid - r, 1, 2 * r);
      }
    }
    this.layer = { key, canvas };
    return canvas;
  }

  #drawRegions(ctx, h, top) {
    const frames = this.frames;
    ctx.font = '10px system-ui, sans-serif';
    ctx.textBaseline = 'top';
    for (const r of this.regions) {
      const a = Math.min(r.a, r.b);
      const b = Math.max(r.a, r.b);
      if (a === b) continue;
      const x0 = this.xOf(R.secondsOf(a));
      const x1 = this.xOf(R.secondsOf(b));
      // new frames (before 0, after the end) in green; the song's own in orange
      const parts = [
        [a, Math.min(b, 0), 'extend'],
        [Math.max(a, 0), Math.min(b, frames), 'repaint'],
        [Math.max(a, frames), b, 'extend']
      ];
      for (const [p0, p1, kind] of parts) {
        if (p1 <= p0) continue;
        ctx.fillStyle = COLORS[kind];
        const px0 = this.xOf(R.secondsOf(p0));
        ctx.fillRect(px0, top, this.xOf(R.secondsOf(p1)) - px0, h - top);
      }
      const isNew = (k) => k < 0 || k > frames || (k === frames && a >= frames);
      const edge = (k) => (isNew(k) ? COLORS.extendEdge : COLORS.repaintEdge);
      for (const [k, x] of [
        [a, x0],
        [b, x1]
      ]) {
        ctx.fillStyle = edge(k);
        ctx.fillRect(Math.round(x) - 1, top, 2, h - top);
        ctx.fillRect(Math.round(x) - 3, (top + h) / 2 - 9, 6, 18); // grip
      }
      // label: the text the `regions` input holds for it (what the node reads); "+x s" for only new frames
      const label = b <= 0 || a >= frames ? `+${R.frameText(b - a)} s` : R.formatRegions([{ a, b }], frames);
      ctx.fillStyle = COLORS.text;
      ctx.textAlign = 'left';
      if (x1 - x0 > ctx.measureText(label).width + 24) ctx.fillText(label, x0 + 5, top + 4);
      if (x1 - x0 > 34) {
        // the close box
        ctx.fillStyle = 'rgba(0,0,0,0.45)';
        ctx.fillRect(x1 - 16, top + 2, 14, 14);
        ctx.strokeStyle = COLORS.text;
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.moveTo(x1 - 12.5, top + 5.5);
        ctx.lineTo(x1 - 5.5, top + 12.5);
        ctx.moveTo(x1 - 5.5, top + 5.5);
        ctx.lineTo(x1 - 12.5, top + 12.5);
        ctx.stroke();
        ctx.lineWidth = 1;
      }
    }
  }

  #drawRuler(ctx, w) {
    ctx.fillStyle = COLORS.ruler;
    ctx.fillRect(0, 0, w, RULER);
    const [t0, t1] = this.view;
    const pxPerSecond = w / (t1 - t0);
    const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600];
    const step = steps.find((s) => s * pxPerSecond >= 64) ?? 600;
    const minor = step / (String(step).startsWith('2') ? 4 : 5);
    ctx.strokeStyle = COLORS.rulerText;
    ctx.fillStyle = COLORS.rulerText;
    ctx.font = '10px system-ui, sans-serif';
    ctx.textAlign = 'left';
    ctx.textBaseline = 'top';
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let i = Math.ceil(t0 / minor); i * minor <= t1; i++) {
      const t = i * minor;
      const x = Math.round(this.xOf(t)) + 0.5;
      const major = Math.abs(t / step - Math.round(t / step)) < 1e-6;
      ctx.moveTo(x, RULER);
      ctx.lineTo(x, major ? RULER - 8 : RULER - 4);
      if (major) {
        const s = Math.round(t / step) * step;
        const label = this.duration >= 60 && step >= 1 ? clock(s).replace(/\.0$/, '') : `${fixed(s)}s`;
        ctx.fillText(label, x + 3, 2);
      }
    }
    ctx.stroke();
  }

  destroy() {
    this.abort?.abort();
    this.observer.disconnect();
    this.resize.disconnect();
    for (const type of ['play', 'pause', 'ended', 'seeked', 'timeupdate'])
      this.player.removeEventListener(type, this.onPlayer);
    if (this.raf) cancelAnimationFrame(this.raf);
    if (this.pending) cancelAnimationFrame(this.pending);
  }
}

const OFF = (why) =>
  `The waveform editor is off: ${why}. The nodes still work: type the seconds into their inputs ` +
  '(regions: e.g. 10-20, 35.5-end, end-end+10).';

/** What this piece needs from the frontend and the browser, or why it cannot run. */
function missingApi() {
  return firstMissing([
    [typeof api?.apiURL === 'function', 'the ComfyUI frontend has no api.apiURL'],
    [typeof window.OfflineAudioContext === 'function', 'this browser has no Web Audio API to decode audio'],
    [typeof window.ResizeObserver === 'function', 'this browser has no ResizeObserver']
  ]);
}

function attach(node) {
  if (typeof node.addDOMWidget !== 'function') {
    sayOnce('waveform', OFF('this ComfyUI frontend has no node.addDOMWidget'));
    return;
  }
  const player = node.widgets?.find((w) => w.name === 'audioUI');
  if (!player?.element || player.element.tagName !== 'AUDIO') {
    sayOnce('waveform', OFF("ComfyUI's audio player widget (audioUI) is missing"));
    return;
  }
  const editor = new WaveformEditor(node, player);
  const widget = node.addDOMWidget(WIDGET, 'acestep_waveform', editor.element, {
    serialize: false,
    hideOnZoom: true,
    getMinHeight: () => 150,
    getValue: () => '',
    setValue: () => {}
  });
  widget.serialize = false;
  widget.editor = editor;
  // Hide ComfyUI's own player: ours plays through it (same element, same file), with the waveform.
  player.element.style.display = 'none';
  player.computeLayoutSize = () => ({ minHeight: 0, maxHeight: 0, minWidth: 0 });

  const onDrawForeground = node.onDrawForeground;
  node.onDrawForeground = function (...args) {
    onDrawForeground?.apply(this, args);
    editor.syncFromWidget();
  };
  const onRemoved = node.onRemoved;
  node.onRemoved = function (...args) {
    editor.destroy();
    return onRemoved?.apply(this, args);
  };
  node.setSize([Math.max(node.size[0], 460), Math.max(node.size[1], node.computeSize()[1])]);
}

const extension = {
  name: 'AceStep.Waveform',
  setup() {
    const missing = missingApi();
    if (missing) sayOnce('waveform', OFF(missing));
  },
  nodeCreated(node) {
    if (!NODES.has(node.comfyClass ?? node.constructor?.comfyClass)) return;
    const missing = missingApi();
    if (missing) return sayOnce('waveform', OFF(missing));
    addStyle('acestep-waveform-style', CSS);
    attach(node);
  }
};

if (typeof app?.registerExtension === 'function') app.registerExtension(extension);
else sayOnce('waveform', OFF('the ComfyUI frontend has no app.registerExtension'));
