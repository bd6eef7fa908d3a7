// Painting the waveform editor's canvas: the song's peaks and RMS, the hatched room outside it, the latent frame
// grid, the regions, the seconds ruler, the frame under the pointer and the playhead.
//
// Functions of a scene (what to show; the editor decides that) onto a 2D context, in CSS px: no state but the
// cached waveform layer, no ComfyUI.

import * as R from './regions.js';

export const RULER = 18; // px: the seconds ruler at the top
export const COLORS = {
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

/** Seconds as m:ss.s (the ruler of long songs, the time beside the play button). */
export function clock(s) {
  const sign = s < 0 ? '-' : '';
  s = Math.abs(s);
  const m = Math.floor(s / 60);
  return `${sign}${m}:${(s - m * 60).toFixed(1).padStart(4, '0')}`;
}

/** Seconds with at most 2 decimals, no trailing zeros. */
export const fixed = (s) => String(Number(s.toFixed(2)));

/** Canvas x (CSS px) of time t (s) in `view` ([t0, t1] s) drawn `w` px wide: the pointer maps back through it. */
export function xIn(view, w, t) {
  const [t0, t1] = view;
  return ((t - t0) / (t1 - t0)) * w;
}

/** Size the canvas' pixels to its box at the screen's pixel ratio and paint the background:
 * {ctx, w, h, dpr} in CSS px, or null while the canvas has no size (not laid out, hidden). */
export function beginFrame(canvas) {
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return null;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = COLORS.background;
  ctx.fillRect(0, 0, w, h);
  return { ctx, w, h, dpr };
}

/** The canvas while there is no song to show (state: empty | loading | error). */
export function drawPlaceholder({ ctx, w, h }, state) {
  ctx.fillStyle = COLORS.rulerText;
  ctx.font = '12px system-ui, sans-serif';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  const text = { empty: '', loading: 'decoding…', error: 'cannot show this audio' }[state];
  ctx.fillText(text, w / 2, h / 2);
}

/**
 * A decoded song. `scene`: {view: [t0, t1] s, crop: [first, last] samples of the file shown, duration (s) and
 * frames of that part, regions ([{a, b}] frames), hover (frame or null), playhead (s or null), peaks, src}.
 * `layer`: the editor's WaveLayer, so that playback redraws only what moves.
 */
export function drawSong(frame, scene, layer) {
  const s = { ...frame, ...scene, top: RULER, x: (t) => xIn(scene.view, frame.w, t) };
  const { ctx, w, h, top, x } = s;
  drawOutside(s);
  drawGrid(s);
  ctx.drawImage(layer.render(s), 0, 0, w, h);
  drawRegions(s);
  drawRuler(s);
  if (s.hover !== null) {
    const px = Math.round(x(R.secondsOf(s.hover))) + 0.5;
    ctx.strokeStyle = COLORS.hover;
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(px, top);
    ctx.lineTo(px, h);
    ctx.stroke();
    ctx.setLineDash([]);
  }
  if (s.playhead !== null) {
    const px = Math.round(x(s.playhead)) + 0.5;
    ctx.strokeStyle = COLORS.playhead;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(px, 0);
    ctx.lineTo(px, h);
    ctx.stroke();
    ctx.fillStyle = COLORS.playhead;
    ctx.beginPath();
    ctx.moveTo(px - 5, 0);
    ctx.lineTo(px + 5, 0);
    ctx.lineTo(px, 6);
    ctx.fill();
  }
}

/** Outside the song (before 0, after its end): darker and hatched, the room to drag an extension into. */
function drawOutside({ ctx, w, h, top, x, duration }) {
  const spans = [
    [0, x(0)],
    [x(duration), w]
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
    for (let px = Math.floor((a - h) / 8) * 8; px < b; px += 8) {
      ctx.moveTo(px, h);
      ctx.lineTo(px + h - top, top);
    }
    ctx.stroke();
    ctx.restore();
  }
}

/** The latent frame grid, once frames are wide enough to see (that is where edges snap). */
function drawGrid({ ctx, h, top, x, view }) {
  const pxPerFrame = x(R.FRAME_SECONDS) - x(0);
  if (pxPerFrame < 6) return;
  const [t0, t1] = view;
  ctx.strokeStyle = COLORS.grid;
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let k = Math.floor(t0 / R.FRAME_SECONDS); k <= Math.ceil(t1 / R.FRAME_SECONDS); k++) {
    const px = Math.round(x(R.secondsOf(k))) + 0.5;
    ctx.moveTo(px, top);
    ctx.lineTo(px, h);
  }
  ctx.stroke();
}

/** The waveform itself, drawn once per view and size (playback only moves the playhead over it). */
export class WaveLayer {
  key = null;
  canvas = null;

  render({ w, h, top, dpr, x, view, crop, duration, peaks, src }) {
    const [t0, t1] = view;
    const [first, last] = crop;
    const key = `${t0},${t1},${w},${h},${dpr},${first},${last},${src}`;
    if (this.key === key) return this.canvas;
    const canvas = this.canvas ?? document.createElement('canvas');
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const mid = (top + h) / 2;
    const peak = last > first ? peaks.peak(first, last) : 0;
    const scale = ((h - top) / 2 - 2) * (peak > 0 ? 0.95 / peak : 1);
    ctx.fillStyle = COLORS.midline;
    const [m0, m1] = [Math.max(0, x(0)), Math.min(w, x(duration))];
    ctx.fillRect(m0, Math.round(mid), m1 - m0, 1);
    const perPx = ((t1 - t0) / w) * R.SAMPLE_RATE;
    for (let px = 0; px < w; px++) {
      const i0 = Math.max(first, first + Math.floor(t0 * R.SAMPLE_RATE + px * perPx));
      const i1 = Math.min(last, first + Math.floor(t0 * R.SAMPLE_RATE + (px + 1) * perPx));
      if (i1 <= i0) {
        if (i0 >= last) break;
        continue;
      }
      const [lo, hi, rms] = peaks.range(i0, Math.max(i1, i0 + 1));
      const yTop = mid - hi * scale;
      const yBottom = mid - lo * scale;
      ctx.fillStyle = COLORS.peak;
      ctx.fillRect(px, yTop, 1, Math.max(1, yBottom - yTop));
      const r = Math.min(rms, hi, -lo) * scale;
      if (r > 0.5) {
        ctx.fillStyle = COLORS.rms;
        ctx.fillRect(px, mid - r, 1, 2 * r);
      }
    }
    this.key = key;
    this.canvas = canvas;
    return canvas;
  }
}

function drawRegions({ ctx, h, top, x, frames, regions }) {
  ctx.font = '10px system-ui, sans-serif';
  ctx.textBaseline = 'top';
  for (const r of regions) {
    const a = Math.min(r.a, r.b);
    const b = Math.max(r.a, r.b);
    if (a === b) continue;
    const x0 = x(R.secondsOf(a));
    const x1 = x(R.secondsOf(b));
    // new frames (before 0, after the end) in green; the song's own in orange
    const parts = [
      [a, Math.min(b, 0), 'extend'],
      [Math.max(a, 0), Math.min(b, frames), 'repaint'],
      [Math.max(a, frames), b, 'extend']
    ];
    for (const [p0, p1, kind] of parts) {
      if (p1 <= p0) continue;
      ctx.fillStyle = COLORS[kind];
      const px0 = x(R.secondsOf(p0));
      ctx.fillRect(px0, top, x(R.secondsOf(p1)) - px0, h - top);
    }
    const isNew = (k) => k < 0 || k > frames || (k === frames && a >= frames);
    const edge = (k) => (isNew(k) ? COLORS.extendEdge : COLORS.repaintEdge);
    for (const [k, px] of [
      [a, x0],
      [b, x1]
    ]) {
      ctx.fillStyle = edge(k);
      ctx.fillRect(Math.round(px) - 1, top, 2, h - top);
      ctx.fillRect(Math.round(px) - 3, (top + h) / 2 - 9, 6, 18); // grip
    }
    // label: the text the `regions` input holds for it (what the node reads); "+x s" for only new frames
    const label = b <= 0 || a >= frames ? `+${R.frameText(b - a)} s` : R.formatRegions([{ a, b }], frames);
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = 'left';
    if (x1 - x0 > ctx.measureText(label).width + 24) ctx.fillText(label, x0 + 5, top + 4);
    if (x1 - x0 > 34) {
      // the close box (region_gestures.js hits it at the same place)
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

function drawRuler({ ctx, w, x, view, duration }) {
  ctx.fillStyle = COLORS.ruler;
  ctx.fillRect(0, 0, w, RULER);
  const [t0, t1] = view;
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
    const px = Math.round(x(t)) + 0.5;
    const major = Math.abs(t / step - Math.round(t / step)) < 1e-6;
    ctx.moveTo(px, RULER);
    ctx.lineTo(px, major ? RULER - 8 : RULER - 4);
    if (major) {
      const s = Math.round(t / step) * step;
      const label = duration >= 60 && step >= 1 ? clock(s).replace(/\.0$/, '') : `${fixed(s)}s`;
      ctx.fillText(label, px + 3, 2);
    }
  }
  ctx.stroke();
}
