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

// Our node ids, exactly (nodes/*.py `node_id=`): the frontend pieces hook these and no other pack's nodes.
export const NODE_PREFIX = 'AceStepFaithful';
const V1_IDS = [
    'LoadAudio',
    'SaveAudio',
    'PreviewAudio',
    'EncodePrompt',
    'Guider',
    'SamplerSelect',
    'Scheduler',
    'Noise',
    'EmptyLatent',
    'EncodeAudio',
    'DecodeLatent',
    'MaskFromSeconds',
    'ExtendLatent',
    'DiTLoader',
    'VAELoader',
    'TextEncoderLoader',
    'LyricTokenizerLoader',
    'SpeakerLoader',
    'CheckpointLoader',
    'LoraLoader',
    'LyricsCheck',
    'Sampler',
    'FlowEdit',
    'AudioToImage',
].map((name) => NODE_PREFIX + name);
const V15_IDS = [
    '15CheckpointLoader',
    '15DiTLoader',
    '15DiTFromModel',
    '15VAEFromCore',
    '15FromCoreCLIP',
    '15VAELoader',
    '15TextEncoderLoader',
    '15LMLoader',
    '15LoraLoader',
    '15Planner',
    '15Encode',
    '15EmptyLatent',
    '15Sampler',
    '15Decode',
].map((name) => NODE_PREFIX + name);
// v1 nodes added after the id rename (no old id): core's models as ours, ours to core
const AFTER_RENAME_IDS = ['DiTFromModel', 'VAEFromCore', 'TextEncoderFromCore', 'ConditioningToCore'].map(
    (name) => NODE_PREFIX + name,
);
export const NODE_IDS = new Set([...V1_IDS, ...AFTER_RENAME_IDS, ...V15_IDS]);

// The v1 nodes' ids before 0.1 (AceStepLoadAudio, ...), which another pack uses too: old id -> our id. (The 1.5
// nodes came later, with the prefix.)
export const LEGACY_IDS = new Map(V1_IDS.map((id) => ['AceStep' + id.slice(NODE_PREFIX.length), id]));

// python_module of every node definition the server sent (noteNodeDef): tells our aliases of the old ids from
// another pack's nodes of the same id.
const modules = new Map();

export function noteNodeDef(nodeData) {
  if (nodeData?.name) modules.set(nodeData.name, nodeData.python_module ?? '');
}

/** Whether the old id `type` is free or registered by this pack (our deprecated alias), not by another pack. */
export function legacyIsOurs(type) {
  if (!LEGACY_IDS.has(type)) return false;
  if (!modules.has(type)) return true; // not registered at all: only our old workflows name it with our inputs
  return modules.get(type) === modules.get(LEGACY_IDS.get(type));
}

/** Our id for a node type (`AceStepFaithfulLoadAudio`; our old alias `AceStepLoadAudio` too), else null. */
export function ourNodeId(type) {
  if (NODE_IDS.has(type)) return type;
  return legacyIsOurs(type) ? LEGACY_IDS.get(type) : null;
}
