// The waveform on ACE-Step Load Audio, Save Audio and Preview Audio: the audio ComfyUI serves at /view, decoded in
// the browser (Web Audio), with play/pause and a playhead, zoom and a seconds ruler. On the loader it is also the
// editor of its `regions` input: drag to mark parts to regenerate, drag the edges to adjust them, drag past either
// end of the song to extend it. Edges snap to ACE-Step's latent frames (4096 samples at 44.1 kHz), so what is
// marked is exactly what ACE-Step Mask from Seconds regenerates.
//
// Public frontend API only: app.registerExtension (setup, nodeCreated), node.addDOMWidget, the core audio
// player widget (`audioUI`, an <audio> element whose src ComfyUI sets) and api.apiURL. Without them, or without
// Web Audio, the nodes keep their plain inputs and the console says why, once.
//
// This file is the glue (the extension, the DOM widget, the `regions` widget, the bar and the status line) and the
// editor that composes peaks.js (decoding), waveform_draw.js (painting) and region_gestures.js (the mouse).

import { api } from '../../scripts/api.js';
import { app } from '../../scripts/app.js';
import { decode, Peaks } from './peaks.js';
import { localPoint, RegionGestures, snapFrame } from './region_gestures.js';
import * as R from './regions.js';
import { addStyle, firstMissing, forwardCanvasGestures, NODE_PREFIX, ourNodeId, sayOnce } from './support.js';
import * as D from './waveform_draw.js';

const NODES = new Set(['LoadAudio', 'SaveAudio', 'PreviewAudio'].map((name) => NODE_PREFIX + name));
const WIDGET = 'waveform'; // our DOM widget's name

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
    this.hover = null; // frame under the pointer
    this.waveLayer = new D.WaveLayer();
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

  /** The region gesture in progress (region_gestures.js), or null. */
  get drag() {
    return this.gestures?.drag ?? null;
  }

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

  /** Write the regions (normalized) to the widget, as one undo step. */
  commit() {
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

  /** Drop an unfinished edit: show what the widget holds. */
  revert() {
    this.text = null;
    this.syncFromWidget();
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
    return D.xIn(this.view, this.canvas.clientWidth, t);
  }

  timeAt(x) {
    const [t0, t1] = this.view;
    return t0 + (x / this.canvas.clientWidth) * (t1 - t0);
  }

  /** The latent frame boundary nearest to canvas x, inside the allowed timeline. */
  frameAt(x) {
    return snapFrame(this.timeAt(x), this.frames);
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
        this.commit();
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

    this.gestures = new RegionGestures(this); // seek, mark, resize and remove regions
    this.canvas.addEventListener('wheel', (e) => this.#wheel(e), { passive: false });
    forwardCanvasGestures(this.canvas, app);
    return root;
  }

  #updateBar() {
    const playing = !this.player.paused;
    this.playButton.textContent = playing ? '❚❚' : '▶';
    this.playButton.disabled = this.state !== 'ready';
    const now = clamp(this.player.currentTime - this.crop[0] / R.SAMPLE_RATE, 0, this.duration);
    this.time.textContent = this.state === 'ready' ? `${D.clock(now)} / ${D.clock(this.duration)}` : '';
    this.zoomIn.disabled = this.zoomOut.disabled = this.zoomFit.disabled = this.state !== 'ready';
    if (this.clearButton) this.clearButton.disabled = !this.editable || this.regions.length === 0;
    this.updateStatus();
  }

  updateStatus() {
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
      if (inside) parts.push(`regenerate ${D.fixed(R.secondsOf(inside))} s`);
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

  /** The wheel zooms around the pointer; shift + wheel (or a sideways swipe) scrolls. */
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
    const [x] = localPoint(this.canvas, e);
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
    const frame = D.beginFrame(this.canvas);
    if (!frame) return;
    this.syncFromWidget();
    this.#updateBar();
    if (this.state !== 'ready') {
      D.drawPlaceholder(frame, this.state);
      return;
    }
    const now = this.player.currentTime - this.crop[0] / R.SAMPLE_RATE;
    const scene = {
      view: this.view,
      crop: this.crop,
      duration: this.duration,
      frames: this.frames,
      regions: this.regions,
      hover: this.hover,
      playhead: now > 0 || !this.player.paused ? now : null,
      peaks: this.peaks,
      src: this.src
    };
    D.drawSong(frame, scene, this.waveLayer);
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
  // Frontend 1.4x wraps each DOM widget in a positioned box of its own, shown while the widget is not hidden: over
  // the upload button (the player takes no height), where it would catch the clicks.
  player.hidden = true;

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
  name: 'AceStepFaithful.Waveform',
  setup() {
    const missing = missingApi();
    if (missing) sayOnce('waveform', OFF(missing));
  },
  nodeCreated(node) {
    if (!NODES.has(ourNodeId(node.comfyClass ?? node.constructor?.comfyClass))) return;
    const missing = missingApi();
    if (missing) return sayOnce('waveform', OFF(missing));
    addStyle('acestep-waveform-style', CSS);
    attach(node);
  }
};

if (typeof app?.registerExtension === 'function') app.registerExtension(extension);
else sayOnce('waveform', OFF('the ComfyUI frontend has no app.registerExtension'));
