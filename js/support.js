// Shared by the pack's frontend pieces: saying once why a piece is off, and their style sheet.

const said = new Set();

/** One console line per missing feature: the nodes go on working with their plain inputs. */
export function sayOnce(key, message) {
  if (said.has(key)) return;
  said.add(key);
  console.warn(`[ACE-Step] ${message}`);
}

/** The first missing thing in `checks` ([[ok, 'what is missing'], ...]), or null. */
export function firstMissing(checks) {
  for (const [ok, what] of checks) if (!ok) return what;
  return null;
}

export function addStyle(id, css) {
  if (document.getElementById(id)) return;
  const style = document.createElement('style');
  style.id = id;
  style.textContent = css;
  document.head.appendChild(style);
}

/** Send middle-button panning and ctrl+wheel zooming on our DOM widgets to the graph canvas, as ComfyUI's own
 * text boxes do (so the graph still moves when the pointer is over a waveform). */
export function forwardCanvasGestures(el, app) {
  const canvas = () => app?.canvas;
  el.addEventListener('pointerdown', (e) => e.button === 1 && canvas()?.processMouseDown?.(e));
  el.addEventListener('pointermove', (e) => (e.buttons & 4) === 4 && canvas()?.processMouseMove?.(e));
  el.addEventListener('pointerup', (e) => e.button === 1 && canvas()?.processMouseUp?.(e));
}
