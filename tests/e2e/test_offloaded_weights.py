"""Our models where a GPU's model manager keeps their weights: away from the compute device, fetched by each layer.

ComfyUI on a GPU streams the layers that do not fit (``--lowvram``, a big model) and, from 0.18 on NVIDIA, loads
every model through its dynamic-VRAM patcher (``CoreModelPatcher``), which keeps all the layers' weights off the
device until their own forward fetches them. Our loaders hand ComfyUI its current patcher class; these tests run
every model's node path with the weights away (``e2e/offload.py``: on the ``meta`` device, reachable only through
ComfyUI's per-layer cast) and get the very same songs, plans and audio as with the weights in place.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"

# Every model and its node path: v1 (checkpoint -> encode -> sampler, a LoRA, audio -> latent -> audio) and 1.5
# (plan -> encode -> sampler on the plan's codes, cover of a source audio with a reference timbre -> audio).
SONGS = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(ROOT / "tests" / "e2e")!r})
    from offload import Offloaded
    from acestep_pack.nodes import conditioning, latents, loaders, lora, sampling
    from acestep_pack.nodes.v15 import loaders as loaders15, prompts, sampling as sampling15
    for folder in ({str(GOLDEN)!r}, {str(GOLDEN / "v15" / "pipeline" / "tiny")!r}, {str(GOLDEN / "v15" / "lm")!r}):
        folder_paths.add_model_folder_path("acestep", folder)
    folder_paths.add_model_folder_path("loras", {str(GOLDEN / "lora")!r})
    t = torch.arange(48000 * 3) / 48000
    tone = {{"waveform": torch.stack([torch.sin(2 * torch.pi * 220 * t), torch.sin(2 * torch.pi * 331 * t)])[None] * 0.3,
            "sample_rate": 48000}}

    def songs():
        dit, vae, te, tok = loaders.AceStepCheckpointLoader.execute("tiny", "fp32").args
        cond = conditioning.AceStepEncodePrompt.execute(te, tok, "lofi piano", "[verse]\\nla la").args[0]
        def sample(d, latent):
            return sampling.AceStepSampler.execute(d, cond, latent, 7, 4, "euler", "apg", 15.0, 10.0, 0.0, 0, 0.5
                                                   ).args[0]
        song = sample(dit, {{"samples": torch.zeros(1, 8, 16, 40)}})
        patched = sample(lora.AceStepLoraLoader.execute(dit, "tiny_lora/pytorch_lora_weights.safetensors", 0.7).args[0],
                         {{"samples": torch.zeros(1, 8, 16, 40)}})
        encoded = latents.AceStepEncodeAudio.execute(tone, vae).args[0]
        v1 = [song["samples"], patched["samples"], encoded["samples"],
              latents.AceStepDecodeLatent.execute(song, vae).args[0]["waveform"]]

        dit = loaders15.AceStep15DiTLoader.execute("acestep-v15-turbo", "auto", "fp32").args[0]
        te = loaders15.AceStep15TextEncoderLoader.execute("Qwen3-Embedding-0.6B", "fp32").args[0]
        vae = loaders15.AceStep15VAELoader.execute("vae", "fp32").args[0]
        lm = loaders15.AceStep15LMLoader.execute("tiny-lm", "fp32").args[0]
        plan, codes, duration, metadata = prompts.AceStep15Planner.execute(lm, "jazz trio", "", 0, "auto", "auto",
                                                                           10.0, 11).args
        prompt = prompts.AceStep15Encode.execute(te, "lofi piano", "[verse]\\nla la", "en", 90, "A minor", "auto",
                                                 plan).args[0]
        latent = {{"samples": torch.zeros(1, dit.latent_dim, 50), "type": "audio"}}
        def sample15(task, **kw):
            return sampling15.AceStep15Sampler.execute(dit, prompt, latent, 3, 8, 3.0, 1.0, "ode", task,
                                                       global_seed=5, **kw).args[0]
        planned = sample15("text2music", audio_codes=codes)
        cover = sample15("cover", vae=vae, source_audio=tone, reference_audio=tone)
        v15 = [planned["samples"], cover["samples"], sampling15.AceStep15Decode.execute(vae, cover).args[0]["waveform"]]
        handles = (dit, te, vae)  # (the LM keeps the plain patcher: its token loop wants its weights resident)
        return [t.clone() for t in v1 + v15], codes + metadata, (handles, lm)

    LORA = 1  # the v1 song with a LoRA

    def same(a, b, skip=()):
        return all(torch.equal(x, y) for i, (x, y) in enumerate(zip(a[0], b[0])) if i not in skip) and a[1] == b[1]

    def patchers(handles):
        models, lm = handles
        return sorted({{type(h.patcher).__name__ for h in models}}) + [type(lm.patcher).__name__]
""")


def test_every_model_gives_the_same_songs_with_its_weights_away(tmp_path):
    """With every comfy.ops layer's weights off the compute device (fetched only by the layer's own cast, as
    ComfyUI's streaming and dynamic VRAM do on a GPU), every node path makes the same songs, plans and audio bit for
    bit."""
    from e2e.test_sampling_nodes import in_comfyui

    result = in_comfyui(
        tmp_path,
        SONGS
        + textwrap.dedent("""
        here, plan, _ = songs()
        away = Offloaded()
        offloaded = songs()
        print(json.dumps({"same": same((here, plan), offloaded), "away": sorted(away.away),
                          "finite": all(bool(torch.isfinite(t).all()) for t in here)}))
        """),
    )
    # every model but 1.5's Oobleck VAE, whose weight-normed convolutions are no comfy.ops layers (always loaded)
    assert result["away"] == [
        "ACEStepTransformer", "AceStepConditionGenerationModel", "MusicDCAE", "Qwen3ForCausalLM", "Qwen3Model",
        "UMT5EncoderModel",
    ], result  # fmt: skip
    assert result["finite"], result
    assert result["same"], result


def test_our_models_take_comfyuis_current_patcher_class(tmp_path):
    """Our loaders wrap their models in the patcher class ComfyUI wraps its own in: ``CoreModelPatcher`` on ComfyUI
    0.18+, which its main.py makes the dynamic-VRAM patcher on NVIDIA; ComfyUI's ModelPatcher on older ones, and for
    the 5 Hz LM, whose token loop wants its weights resident (one CUDA graph per token). On 0.20.1 the dynamic patcher
    (kept on the CPU) loads every other model, with the weights away as well, to the same songs.

    ComfyUI quirk: the dynamic patcher hands a LoRA to a layer as a ``weight_lowvram_function`` that only its VRAM
    path applies (``comfy.ops.cast_modules_with_vbar``), so on a CPU a LoRA does nothing (ComfyUI never runs it on
    one: it gives CPUs the plain patcher). The LoRA song is left out of the comparison and shown to be the base song."""
    from e2e.test_sampling_nodes import in_comfyui

    result = in_comfyui(
        tmp_path,
        SONGS
        + textwrap.dedent("""
        import comfy.model_patcher as mp
        if not hasattr(mp, "CoreModelPatcher"):  # ComfyUI before 0.18
            print(json.dumps({"core": False, "patchers": patchers(songs()[2])}))
        else:
            here, plan, handles = songs()
            default = patchers(handles)
            from offload import CPUDynamic
            mp.CoreModelPatcher = CPUDynamic  # as main.py does on NVIDIA
            dynamic = songs()
            Offloaded()
            away = songs()
            print(json.dumps({"core": True, "default": default, "patchers": patchers(dynamic[2]),
                              "same": same((here, plan), dynamic, skip=[LORA]),
                              "same_away": same((here, plan), away, skip=[LORA]),
                              "cpu_lora_is_base": bool(torch.equal(dynamic[0][LORA], here[0])),
                              "lora_moves": bool(not torch.equal(here[LORA], here[0]))}))
        """),
    )
    if not result["core"]:
        assert result["patchers"] == ["ModelPatcher", "ModelPatcher"], result
        return
    assert result["default"] == ["ModelPatcher", "ModelPatcher"], result
    assert result["patchers"] == ["CPUDynamic", "ModelPatcher"], (
        result
    )  # the LM: ComfyUI's plain ModelPatcher
    assert result["same"] and result["same_away"], result
    assert result["lora_moves"] and result["cpu_lora_is_base"], result
