// The song behind the waveform: the file ComfyUI serves, fetched and decoded in the browser (Web Audio) at
// 44.1 kHz, and its peaks, precomputed once so that any zoom level draws quickly.
//
// No DOM, no ComfyUI: `Peaks` needs only an AudioBuffer (or anything with its sampleRate, length,
// numberOfChannels and getChannelData).

import { SAMPLE_RATE } from './regions.js';

export const BUCKET = 256; // samples per precomputed peak

/** The file at `url` as an AudioBuffer at 44.1 kHz; errors say, in words for the status line, what went wrong. */
export async function decode(url, signal) {
  const response = await fetch(url, { signal });
  if (!response.ok) throw new Error(`cannot load the file (${response.status} ${response.statusText})`);
  const data = await response.arrayBuffer();
  // Decoding resamples to the context's rate: 44.1 kHz, the DCAE's, so samples map straight onto latent frames.
  try {
    return await new OfflineAudioContext(1, 1, SAMPLE_RATE).decodeAudioData(data);
  } catch (error) {
    throw new Error(`the browser cannot decode this file's audio (${error.message ?? error})`);
  }
}

/** Min/max/mean-square per BUCKET samples over all channels, for drawing any zoom level quickly. */
export class Peaks {
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
