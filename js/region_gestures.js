// The mouse on the waveform's canvas: click or drag on the ruler (or anywhere while the regions cannot be edited)
// to move the playhead; on the loader, drag to mark a region, drag its edges to resize it, click its × or
// double-click it to remove it. Every edge lands on a latent frame boundary (regions.js), up to the official
// extend window past either end of the song.

import * as R from './regions.js';
import { RULER } from './waveform_draw.js';

const EDGE_GRAB = 6; // px around a region edge that grabs it
const MAX_EXTEND_FRAMES = R.framesForSeconds(240); // official extend window

/** The latent frame boundary nearest to time t (s), inside the timeline a song of `frames` frames allows. */
export function snapFrame(t, frames) {
  const k = Math.round(t / R.FRAME_SECONDS);
  return Math.min(frames + MAX_EXTEND_FRAMES, Math.max(-MAX_EXTEND_FRAMES, k));
}

/** Canvas point (CSS px) of a pointer event. */
export function localPoint(canvas, e) {
  const rect = canvas.getBoundingClientRect();
  // the graph may be zoomed: the canvas' CSS size is scaled by the DOM widget's transform
  return [
    ((e.clientX - rect.left) * canvas.clientWidth) / rect.width,
    ((e.clientY - rect.top) * canvas.clientHeight) / rect.height
  ];
}

/** What is under canvas point (x, y), with `xOf` mapping seconds to canvas x:
 * {kind: 'close'|'edge'|'inside', index, edge} or null. The close box is where waveform_draw.js draws it. */
export function hitTest(regions, xOf, x, y) {
  for (const [index, r] of regions.entries()) {
    const x0 = xOf(R.secondsOf(r.a));
    const x1 = xOf(R.secondsOf(r.b));
    if (x1 - x0 > 34 && y >= RULER + 2 && y <= RULER + 16 && x >= x1 - 16 && x <= x1 - 2)
      return { kind: 'close', index };
  }
  let best = null;
  for (const [index, r] of regions.entries()) {
    for (const edge of ['a', 'b']) {
      const d = Math.abs(xOf(R.secondsOf(r[edge])) - x);
      if (d <= EDGE_GRAB && (!best || d < best.d)) best = { kind: 'edge', index, edge, d };
    }
  }
  if (best) return best;
  for (const [index, r] of regions.entries()) {
    if (x >= xOf(R.secondsOf(r.a)) && x <= xOf(R.secondsOf(r.b))) return { kind: 'inside', index };
  }
  return null;
}

/**
 * The pointer gestures on one editor's canvas. They change `editor.regions` (in place) and `editor.hover`, and ask
 * the editor to seek, commit (write the `regions` widget), revert (re-read it), redraw and update its status.
 * `drag` is the gesture in progress, with the view it started in: the editor keeps that view until it ends (an
 * extension widens the timeline) and does not follow the widget meanwhile.
 */
export class RegionGestures {
  drag = null;

  constructor(editor) {
    this.editor = editor;
    const c = editor.canvas;
    c.addEventListener('pointerdown', (e) => this.#down(e));
    c.addEventListener('pointermove', (e) => this.#move(e));
    c.addEventListener('pointerup', (e) => this.#up(e));
    c.addEventListener('pointercancel', () => {
      this.drag = null;
      editor.revert(); // drop the unfinished edit
    });
    c.addEventListener('pointerleave', () => {
      editor.hover = null;
      editor.draw();
    });
    c.addEventListener('dblclick', (e) => this.#doubleClick(e));
  }

  #down(e) {
    const ed = this.editor;
    if (e.button !== 0 || ed.state !== 'ready') return;
    e.preventDefault();
    e.stopPropagation();
    const [x, y] = localPoint(ed.canvas, e);
    ed.canvas.setPointerCapture(e.pointerId);
    const view = ed.view;
    if (y < RULER || !ed.editable) {
      this.drag = { kind: 'seek', view };
      ed.seek(x);
      return;
    }
    const hit = hitTest(ed.regions, (t) => ed.xOf(t), x, y);
    if (hit?.kind === 'close') {
      ed.regions.splice(hit.index, 1);
      ed.commit();
      return;
    }
    if (hit?.kind === 'edge') {
      const region = ed.regions[hit.index];
      this.drag = { kind: 'edge', region, edge: hit.edge, x0: x, view };
      return;
    }
    const k = ed.frameAt(x);
    const region = { a: k, b: k };
    ed.regions.push(region);
    this.drag = { kind: 'region', region, x0: x, view };
    ed.draw();
  }

  #move(e) {
    const ed = this.editor;
    const [x, y] = localPoint(ed.canvas, e);
    if (!this.drag) {
      if (ed.state !== 'ready') return;
      const hit = ed.editable && y >= RULER ? hitTest(ed.regions, (t) => ed.xOf(t), x, y) : null;
      const cursor = { edge: 'ew-resize', close: 'pointer' }[hit?.kind] ?? 'crosshair';
      ed.canvas.style.cursor = y < RULER || !ed.editable ? 'pointer' : cursor;
      ed.hover = ed.frameAt(x);
      ed.updateStatus();
      ed.draw();
      return;
    }
    if (this.drag.kind === 'seek') {
      ed.seek(x);
      return;
    }
    const k = ed.frameAt(x);
    if (this.drag.kind === 'region') this.drag.region.b = k;
    else this.drag.region[this.drag.edge] = k;
    ed.hover = k;
    ed.updateStatus();
    ed.draw();
  }

  #up(e) {
    const ed = this.editor;
    const drag = this.drag;
    if (!drag) return;
    this.drag = null;
    ed.canvas.releasePointerCapture?.(e.pointerId);
    if (drag.kind === 'seek') return;
    const [x] = localPoint(ed.canvas, e);
    if (drag.kind === 'region' && (Math.abs(x - drag.x0) < 3 || drag.region.a === drag.region.b)) {
      // a click, not a drag: play from there
      ed.regions.splice(ed.regions.indexOf(drag.region), 1);
      ed.seek(x);
      ed.draw();
      return;
    }
    ed.commit();
  }

  #doubleClick(e) {
    const ed = this.editor;
    if (!ed.editable) return;
    const [x, y] = localPoint(ed.canvas, e);
    const hit = y >= RULER ? hitTest(ed.regions, (t) => ed.xOf(t), x, y) : null;
    if (hit && hit.kind !== 'close') {
      ed.regions.splice(hit.index, 1);
      ed.commit();
    }
  }
}
