// Regions of a song on ACE-Step's latent grid, and their text form: the `regions` input of ACE-Step Load Audio and
// the `ranges` of ACE-Step Mask from Seconds ("10-20, 35.5-end; -5-0 extends before, end-end+10 after").
//
// Pure functions (no DOM, no ComfyUI) that mirror `parse_regions` in nodes/latents.py: seconds become frames as the
// official repaint counts them, `Math.trunc(s * 44100 / 512 / 8)` (same IEEE arithmetic as Python's int()), so
// the frames shown on the waveform are the frames the mask covers.

export const SAMPLE_RATE = 44100; // the DCAE's rate
export const FRAME_SAMPLES = 512 * 8; // official MusicDCAE: 8 mel frames of 512 samples per latent frame
export const FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE; // ~92.9 ms

/** Latent frames for a duration, as the official pipeline counts them (int() of a positive number). */
export const framesForSeconds = (s) => Math.trunc((s * SAMPLE_RATE) / 512 / 8);

/** Latent frames ACE-Step Audio to Latent makes of `samples44k` samples at 44.1 kHz (padded up to whole frames). */
export const framesForSamples = (samples44k) => Math.ceil(samples44k / FRAME_SAMPLES);

/** Seconds of frame boundary `k`. */
export const secondsOf = (k) => k * FRAME_SECONDS;

/** The shortest decimal text (at most 2 decimals) that `framesForSeconds` reads back as exactly `k` frames: frame
 * k's start rounded up to 10 ms (a frame is 92.9 ms long, so it stays inside frame k). */
export function frameText(k) {
  const s = Math.ceil((secondsOf(k) + 1e-6) * 100) / 100;
  return String(Number(s.toFixed(2)));
}

const NUMBER = String.raw`\d+(?:\.\d*)?|\.\d+`;
const RANGE = new RegExp(
  String.raw`^(-?\s*(?:${NUMBER})|end)\s*(?:-|–|:|to)\s*(${NUMBER}|end(?:\s*\+\s*(?:${NUMBER}))?)$`,
  'i'
);

/**
 * Text -> `{regions: [{a, b}], error}`: frame ranges [a, b) on the song's grid of `frames` frames; a < 0 reaches
 * before the song (extend), b > frames after it. Same rules and errors as nodes/latents.py's `parse_regions`.
 */
export function parseRegions(text, frames) {
  const total = secondsOf(frames);
  const regions = [];
  for (let part of String(text ?? '').split(/[,;\n]+/)) {
    part = part.trim();
    if (!part) continue;
    const m = RANGE.exec(part);
    if (!m) return { regions, error: `cannot read '${part}'` };
    const start = m[1].replace(/\s/g, '').toLowerCase();
    const stop = m[2].replace(/\s/g, '').toLowerCase();
    const extra = stop.startsWith('end') ? Number(stop.slice(4) || 0) : null;
    const startS = start === 'end' ? total : Number(start);
    const stopS = extra === null ? Number(stop) : total + extra;
    if (stopS <= startS) return { regions, error: `'${part}' ends before it starts` };
    if (extra === null && stopS > total + FRAME_SECONDS)
      return { regions, error: `'${part}' goes past the end (write end+seconds to extend)` };
    let a = start === 'end' ? frames : Math.sign(startS) * framesForSeconds(Math.abs(startS));
    let b;
    if (extra === null) {
      a = Math.min(a, frames - 1);
      b = Math.min(frames, Math.max(framesForSeconds(stopS), a + 1));
    } else {
      a = Math.min(a, frames);
      b = Math.max(frames + framesForSeconds(extra), a + 1);
    }
    regions.push({ a: a === 0 ? 0 : a, b }); // no -0
  }
  return { regions, error: null };
}

/** Frame ranges -> text that `parseRegions` (and the Python node) read back as exactly these frames. */
export function formatRegions(regions, frames) {
  return regions
    .map(({ a, b }) => {
      const start = a < 0 ? `-${frameText(-a)}` : a >= frames ? 'end' : frameText(a);
      const stop = b > frames ? `end+${frameText(b - frames)}` : b === frames ? 'end' : frameText(b);
      return `${start}-${stop}`;
    })
    .join(', ');
}

/** Sorted, overlapping or touching ranges merged, each at least one frame; starts at most at the song's end and
 * ends at least at its start (new frames are all regenerated). */
export function normalizeRegions(regions, frames) {
  const sorted = regions
    .map(({ a, b }) => ({ a: Math.min(Math.min(a, b), frames), b: Math.max(Math.max(a, b), 0) }))
    .map(({ a, b }) => ({ a, b: Math.max(b, a + 1) }))
    .sort((x, y) => x.a - y.a);
  const out = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.a <= last.b) last.b = Math.max(last.b, r.b);
    else out.push({ ...r });
  }
  return out;
}

/** How many new frames the regions add before and after the song. */
export function extension(regions, frames) {
  let left = 0;
  let right = 0;
  for (const { a, b } of regions) {
    left = Math.max(left, -a);
    right = Math.max(right, b - frames);
  }
  return { left, right };
}
