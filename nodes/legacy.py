"""The node ids this pack used before 0.1 (``AceStepLoadAudio``, ...), kept so saved workflows go on loading.

Those ids are also node ids of another published pack (scromfyUI-AceStep), and ComfyUI keeps whichever pack loads
last, so ours are now ``AceStepFaithful<Name>`` (display names unchanged). Inputs, their order and defaults are the
same under both ids, so a saved node migrates by its type name alone. How old ids are taken in, on every ComfyUI:

- ``js/migrate.js`` renames our old-id nodes of a UI workflow to the new ids as it loads (same widget values), so a
  re-saved workflow carries the new ids;
- the old ids stay registered as deprecated aliases (hidden from the node search) that behave identically, for API
  prompts and for a frontend without our js, except an old id another pack registered before us: that pack keeps it
  (and one loading after us replaces the alias, as ComfyUI keeps the last), so the aliases never take another
  pack's id.

ComfyUI 0.20's node replacement (``io.NodeReplace``) is not used: its server side rebuilds a replaced node's inputs
from ``input_mapping`` alone, dropping every input without a mapping and failing on a mapped optional input that a
prompt leaves out, so it cannot carry our nodes' optional inputs.
"""

from __future__ import annotations

import logging
import re

from comfy_api.latest import io

NODE_ID_PREFIX = "AceStepFaithful"
LEGACY_PREFIX = "AceStep"  # before 0.1: AceStep<Name>

log = logging.getLogger(__name__)


def legacy_id(node_id: str) -> str:
    assert node_id.startswith(NODE_ID_PREFIX), node_id
    return LEGACY_PREFIX + node_id[len(NODE_ID_PREFIX) :]


def node_id(node_cls: type[io.ComfyNode]) -> str:
    return node_cls.define_schema().node_id


def alias(node_cls: type[io.ComfyNode]) -> type[io.ComfyNode]:
    """``node_cls`` under its old id, deprecated (so hidden from the node search), otherwise the same node."""
    old = legacy_id(node_id(node_cls))

    def define_schema(cls) -> io.Schema:
        schema = node_cls.define_schema()
        schema.node_id = old
        schema.is_deprecated = True
        return schema

    # ComfyUI caches schema facts in class attributes (_DEPRECATED, _RETURN_TYPES, ...): start them afresh here.
    namespace = {
        k: None for klass in node_cls.__mro__ for k in vars(klass) if re.fullmatch(r"_[A-Z][A-Z_]*", k)
    }
    namespace |= {"define_schema": classmethod(define_schema), "__module__": node_cls.__module__}
    return type(f"{node_cls.__name__}Legacy", (node_cls,), namespace)


def legacy_nodes(nodes: list[type[io.ComfyNode]]) -> list[type[io.ComfyNode]]:
    """The aliases of ``nodes`` under their old ids, less any old id another pack registered before us."""
    try:
        import nodes as comfy_nodes  # ComfyUI's nodes.py: the ids registered so far

        taken = set(comfy_nodes.NODE_CLASS_MAPPINGS)
    except ImportError:
        taken = set()
    aliases = []
    for cls in nodes:
        old = legacy_id(node_id(cls))
        if old in taken:
            log.info(
                "ACE-Step: the old node id %s belongs to another pack here; ours is %s", old, node_id(cls)
            )
            continue
        aliases.append(alias(cls))
    return aliases
