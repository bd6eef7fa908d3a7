// Saved workflows name our nodes by their ids before 0.1 (AceStepLoadAudio, ...), ids another pack uses too. As a
// UI workflow loads, this renames those nodes to our ids (AceStepFaithfulLoadAudio, ...): the inputs, their order and
// widget values are the same under both ids, so the type name is all that changes. A node whose old id another pack
// has registered on this server is left to that pack. The server keeps the old ids as hidden aliases too (for API
// prompts), see nodes/legacy.py.
//
// Public frontend API only: app.registerExtension (beforeRegisterNodeDef, beforeConfigureGraph).

import { app } from '../../scripts/app.js';
import { LEGACY_IDS, legacyIsOurs, noteNodeDef } from './support.js';

/** Rename our old-id nodes of a UI workflow (and of its subgraphs) in place; returns the old ids renamed. */
export function migrateWorkflow(graphData) {
  const renamed = new Set();
  const visit = (nodes) => {
    if (!Array.isArray(nodes)) return;
    for (const node of nodes) {
      const type = node?.type;
      if (!LEGACY_IDS.has(type) || !legacyIsOurs(type)) continue;
      node.type = LEGACY_IDS.get(type);
      if (node.properties?.['Node name for S&R'] === type) node.properties['Node name for S&R'] = node.type;
      renamed.add(type);
    }
  };
  visit(graphData?.nodes);
  for (const subgraph of graphData?.definitions?.subgraphs ?? []) visit(subgraph?.nodes);
  return renamed;
}

app.registerExtension({
  name: 'AceStepFaithful.Migrate',
  beforeRegisterNodeDef(nodeType, nodeData) {
    noteNodeDef(nodeData);
  },
  beforeConfigureGraph(graphData, missingNodeTypes) {
    const renamed = migrateWorkflow(graphData);
    if (!renamed.size || !Array.isArray(missingNodeTypes)) return;
    // a frontend that listed missing types before this hook: ours are no longer missing
    for (let i = missingNodeTypes.length - 1; i >= 0; i--) {
      const t = missingNodeTypes[i];
      if (renamed.has(typeof t === 'string' ? t : t?.type)) missingNodeTypes.splice(i, 1);
    }
  },
});
