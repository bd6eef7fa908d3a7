// Lyrics boxes of our nodes (a multiline widget named `lyrics` on a node of support.js NODE_IDS): structure
// tags ([verse], [chorus], ...) highlighted as you type, and, on ACE-Step Check Lyrics after a run, each line's
// language, token count and unknown tokens shown against the line, with a summary under the box.
//
// The highlight is a backdrop behind ComfyUI's own <textarea> (made transparent): the text stays a plain textarea
// (typing, undo, copy work as usual) and the backdrop mirrors its lines with the tags marked.

import { app } from '../../scripts/app.js';
import { addStyle, firstMissing, NODE_PREFIX, ourNodeId, sayOnce } from './support.js';

const CHECK_NODE = `${NODE_PREFIX}LyricsCheck`;
const TAG = /\[[^\]\n]{1,40}\]/g;
const KINDS = ['verse', 'chorus', 'bridge', 'intro', 'outro', 'hook', 'inst']; // colour per kind, else "other"

const CSS = `
.acestep-lyrics-backdrop { position: absolute; overflow: hidden; pointer-events: none; box-sizing: border-box;
  color: transparent; white-space: pre-wrap; overflow-wrap: break-word; word-break: normal; margin: 0; }
.acestep-lyrics-backdrop > div { position: relative; min-height: 1lh; }
.acestep-lyrics-backdrop mark { --tag: 64,196,180; color: transparent; border-radius: 3px;
  background: rgba(var(--tag),0.35); box-shadow: 0 0 0 1px rgba(var(--tag),0.6); }
.acestep-lyrics-backdrop mark.verse { --tag: 84,150,255; }
.acestep-lyrics-backdrop mark.chorus { --tag: 255,150,60; }
.acestep-lyrics-backdrop mark.bridge { --tag: 190,110,255; }
.acestep-lyrics-backdrop mark.intro, .acestep-lyrics-backdrop mark.outro { --tag: 140,200,90; }
.acestep-lyrics-backdrop mark.hook, .acestep-lyrics-backdrop mark.inst { --tag: 240,200,60; }
.acestep-lyrics-backdrop > div.unknown { background: rgba(255,170,0,0.14); }
.acestep-lyrics-backdrop > div.left-out { background: rgba(255,80,80,0.22); }
.acestep-lyrics-backdrop > div[data-badge]::after { content: attr(data-badge); position: absolute; right: 2px;
  top: 0; color: var(--descrip-text, #999); opacity: 0.75; font-size: 0.8em; }
.acestep-lyrics-backdrop > div.unknown::after, .acestep-lyrics-backdrop > div.left-out::after {
  color: #ffb35c; opacity: 1; }
.acestep-lyrics-check { box-sizing: border-box; font: 11px system-ui, sans-serif; color: var(--input-text, #ddd);
  overflow: auto; padding: 2px 4px; white-space: pre-wrap; }
.acestep-lyrics-check .problem { color: #ffb35c; }
.acestep-lyrics-check .summary { opacity: 0.85; }
`;

const escape = (s) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

function kindOf(tag) {
  const name = tag.slice(1, -1).trim().toLowerCase();
  if (name.startsWith('pre-chorus') || name.startsWith('prechorus')) return 'bridge';
  return KINDS.find((k) => name.startsWith(k)) ?? 'other';
}

/**
 * ACE-Step Check Lyrics' report (nodes/lyrics.py: a summary line, then one row per lyric line:
 * "  3  en   12 tokens  2 unknown  some text" or "  4  --  (empty line)") -> {summary, rows: {n: row}}.
 */
export function parseReport(text) {
  const [summary = '', ...lines] = String(text ?? '').split('\n');
  const rows = {};
  for (const line of lines) {
    const m = /^\s*(\d+)\s+(\S+)\s+(?:(\d+) tokens\s+(ok|(\d+) unknown|left out: (.*)))?/.exec(line);
    if (!m) continue;
    const [, n, lang, tokens, , unknown, error] = m;
    if (lang === '--') {
      rows[n] = { lang: null };
      continue;
    }
    let textPart = '';
    if (error === undefined) textPart = line.slice(m[0].length).trim();
    rows[n] = {
      lang,
      tokens: Number(tokens),
      unknown: Number(unknown ?? 0),
      error: error ?? null,
      text: textPart
    };
  }
  return { summary, rows };
}

class LyricsView {
  constructor(node, widget) {
    this.node = node;
    this.textarea = widget.element;
    this.backdrop = document.createElement('div');
    this.backdrop.className = 'acestep-lyrics-backdrop';
    this.report = null;
    this.shown = null;
    const update = () => this.update();
    this.textarea.addEventListener('input', update);
    this.textarea.addEventListener('scroll', () => (this.backdrop.scrollTop = this.textarea.scrollTop));
    this.resize = new ResizeObserver(update);
    this.resize.observe(this.textarea);
  }

  /** Put the backdrop behind the textarea once ComfyUI has mounted it; cheap, called on every node draw. */
  mount() {
    const parent = this.textarea.parentElement;
    if (!parent) return;
    if (this.backdrop.parentElement !== parent) {
      parent.insertBefore(this.backdrop, this.textarea);
      this.background = getComputedStyle(this.textarea).backgroundColor;
      this.textarea.style.background = 'transparent';
      this.textarea.style.position = 'relative';
      this.shown = null;
    }
    if (this.textarea.value !== this.shown?.text) this.update();
  }

  update() {
    if (!this.backdrop.parentElement) return;
    const ta = this.textarea;
    const cs = getComputedStyle(ta);
    const b = this.backdrop.style;
    // mirror the textarea's box and text metrics exactly, so lines wrap at the same places
    b.left = `${ta.offsetLeft}px`;
    b.top = `${ta.offsetTop}px`;
    b.width = `${ta.clientWidth + parseFloat(cs.borderLeftWidth) + parseFloat(cs.borderRightWidth)}px`;
    b.height = `${ta.offsetHeight}px`;
    b.background = this.background;
    b.borderRadius = cs.borderRadius;
    for (const p of ['font', 'letterSpacing', 'lineHeight', 'padding', 'borderStyle', 'borderWidth', 'tabSize'])
      b[p] = cs[p];
    b.borderColor = 'transparent';
    const text = ta.value;
    const rows = this.report?.rows ?? {};
    const html = text.split('\n').map((line, i) => {
      const row = rows[i + 1];
      const marked = escape(line).replace(TAG, (tag) => `<mark class="${kindOf(tag)}">${tag}</mark>`);
      let attrs = '';
      // a line's check result only while the line reads as it did when checked
      if (row?.lang && (row.error || row.text === line.trim())) {
        const cls = row.error ? 'left-out' : row.unknown ? 'unknown' : '';
        const badge = row.error
          ? 'left out'
          : `${row.lang} · ${row.tokens}${row.unknown ? ` · ${row.unknown} unknown` : ''}`;
        attrs = ` class="${cls}" data-badge="${escape(badge)}"`;
      }
      return `<div${attrs}>${marked || '<br>'}</div>`;
    });
    this.backdrop.innerHTML = html.join('');
    this.backdrop.scrollTop = ta.scrollTop;
    this.shown = { text };
  }

  setReport(report) {
    this.report = report;
    this.update();
  }

  destroy() {
    this.resize.disconnect();
    this.backdrop.remove();
  }
}

/** The check's summary and its problem lines, under the lyrics of ACE-Step Check Lyrics. */
function addCheckWidget(node) {
  const el = document.createElement('div');
  el.className = 'acestep-lyrics-check';
  el.innerHTML = '<span class="summary">Run to check each line: language, tokens, unknown tokens.</span>';
  const widget = node.addDOMWidget('lyrics_check', 'acestep_lyrics_check', el, {
    serialize: false,
    hideOnZoom: true,
    getMinHeight: () => 40,
    getMaxHeight: () => 120,
    getValue: () => '',
    setValue: () => {}
  });
  widget.serialize = false;
  return (report) => {
    const problems = Object.entries(report.rows).filter(([, r]) => r.error || r.unknown);
    el.innerHTML =
      `<div class="summary">${escape(report.summary)}</div>` +
      (problems.length
        ? problems
            .map(([n, r]) => {
              const what = r.error
                ? `left out (${r.error})`
                : `${r.unknown} unknown token${r.unknown > 1 ? 's' : ''}`;
              const line = r.text ? ` — ${escape(r.text)}` : '';
              return `<div class="problem">line ${n}: ${escape(what)}${line}</div>`;
            })
            .join('')
        : '<div>Every line reads fine.</div>');
    el.dataset.state = 'checked';
  };
}

function missingApi() {
  return firstMissing([[typeof window.ResizeObserver === 'function', 'this browser has no ResizeObserver']]);
}

const extension = {
  name: 'AceStepFaithful.Lyrics',
  nodeCreated(node) {
    const type = ourNodeId(node.comfyClass ?? node.constructor?.comfyClass);
    if (!type) return;
    const widget = node.widgets?.find((w) => w.name === 'lyrics');
    if (!widget) return;
    const missing = missingApi();
    if (missing || widget.element?.tagName !== 'TEXTAREA') {
      const why = missing ?? 'the lyrics box is not a textarea';
      sayOnce('lyrics', `The lyrics highlighting is off: ${why}. The lyrics work as before.`);
      return;
    }
    addStyle('acestep-lyrics-style', CSS);
    const view = new LyricsView(node, widget);
    widget.acestepLyrics = view;
    let showCheck = null;
    if (type === CHECK_NODE) {
      if (typeof node.addDOMWidget === 'function') showCheck = addCheckWidget(node);
      const onExecuted = node.onExecuted;
      node.onExecuted = function (output) {
        onExecuted?.apply(this, arguments);
        const text = output?.text?.[0];
        if (typeof text !== 'string') return;
        const report = parseReport(text);
        view.setReport(report);
        showCheck?.(report);
      };
    }
    const onDrawForeground = node.onDrawForeground;
    node.onDrawForeground = function (...args) {
      onDrawForeground?.apply(this, args);
      view.mount();
    };
    const onRemoved = node.onRemoved;
    node.onRemoved = function (...args) {
      view.destroy();
      return onRemoved?.apply(this, args);
    };
  }
};

if (typeof app?.registerExtension === 'function') app.registerExtension(extension);
else sayOnce('lyrics', 'The lyrics highlighting is off: the ComfyUI frontend has no app.registerExtension.');
