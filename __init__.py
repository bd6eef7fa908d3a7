"""ComfyUI entry point of the ACE-Step pack (V3 node API): ComfyUI imports this folder as a custom-node package.

Importing it registers our model folders and defines the nodes; it reads no file and loads no model (models load
only when a node runs).
"""

# Outside ComfyUI (pytest imports the repository's root package while collecting) there is nothing to register.
try:
    from comfy_api.latest import ComfyExtension, io
except ImportError:
    ComfyExtension = None
    import importlib.util
    import logging

    if importlib.util.find_spec("comfy") is not None:  # inside a ComfyUI too old for the V3 node API
        logging.getLogger(__name__).error(
            "ACE-Step nodes not loaded: this ComfyUI has no V3 node API (comfy_api.latest). The pack needs "
            "ComfyUI 0.3.76 or newer: update ComfyUI (ComfyUI-Manager: Update ComfyUI, or git pull)."
        )

WEB_DIRECTORY = "./js"

if ComfyExtension is not None:
    from .nodes import NODES, V1_NODES
    from .nodes.common import register_model_folders
    from .nodes.legacy import legacy_nodes

    register_model_folders()

    class AceStepExtension(ComfyExtension):
        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            # the ids before 0.1 (AceStepLoadAudio, ...) as hidden aliases, so saved workflows still load
            return [*NODES, *legacy_nodes(V1_NODES)]

    async def comfy_entrypoint() -> AceStepExtension:
        return AceStepExtension()
