"""Custom sampling in a real ComfyUI: our GUIDER, SAMPLER, SIGMAS and NOISE in core ``SamplerCustomAdvanced``.

With ACE-Step Noise, Guider, Sampler Select and Scheduler the graph gives what ``acestep_models.v1.pipeline.generate``
gives for the same settings (the official pipeline); core samplers (KSamplerSelect) and core noise run with our guider;
ComfyUI's own ACE latents (``EmptyAceStepLatentAudio``) and latent masks (``SetLatentNoiseMask``) go through it.

Slow (a ComfyUI boot and a browser): marked ``slow``, run by ``scripts/test.sh`` and CI all the same.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

PROMPT = "funk, pop, soul, melodic, guitar, drums, bass, 105 BPM"
LYRICS = "[verse]\nHello darkness, my old friend\nI've come to talk with you again\n\n[chorus]\nLa la la"
SECONDS = 2.0  # 21 latent frames
TOLERANCE = 1e-5  # relative L2; the two processes differ only in thread scheduling

# Official settings (pipeline.generate keywords) -> the same through our custom-sampling nodes.
CASES = {
    "euler_apg": dict(scheduler_type="euler", cfg_type="apg", guidance_scale=15.0, infer_step=8, seed=42),
    "heun_cfg_batch": dict(
        scheduler_type="heun",
        cfg_type="cfg",
        guidance_scale=7.0,
        omega_scale=5.0,
        infer_step=5,
        seed=7,
        batch_size=2,
    ),
    "pingpong_cfg_star_oss": dict(
        scheduler_type="pingpong", cfg_type="cfg_star", guidance_scale=10.0, oss_steps="2, 4, 6, 8", seed=3
    ),
    "text_lyric_scales": dict(
        guidance_scale_text=5.0,
        guidance_scale_lyric=2.5,
        guidance_interval=1.0,
        guidance_interval_decay=0.5,
        use_erg_lyric=False,
        infer_step=6,
        seed=11,
    ),
}
GUIDER_KEYS = (
    "guidance_scale",
    "cfg_type",
    "guidance_interval",
    "guidance_interval_decay",
    "min_guidance_scale",
    "guidance_scale_text",
    "guidance_scale_lyric",
    "use_erg_lyric",
    "use_erg_diffusion",
)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).norm() / ref.float().norm()).item()


@pytest.fixture(scope="module")
def models(lyric_vocab):
    """The tiny checkpoint in this process, as the engine's users load it (the same files ComfyUI loads)."""
    from acestep_models.v1 import checkpoint
    from tiny_checkpoints import TINY

    return checkpoint.load_all(TINY, dtype=torch.float32, vocab=lyric_vocab)


def official(models, case: dict, decode: bool = False):
    """``pipeline.generate`` with a case's settings (batch item i seeded seed + i, as ACE-Step Noise draws)."""
    from acestep_models.v1.pipeline import generate

    params = {k: v for k, v in case.items() if k != "seed"}
    batch = case.get("batch_size", 1)
    params.update(
        prompt=PROMPT,
        lyrics=LYRICS,
        audio_duration=SECONDS,
        manual_seeds=[case["seed"] + i for i in range(batch)],
    )
    return generate(models, params, decode=decode)


def loaders(comfy) -> dict:
    return {
        "ckpt": {
            "type": "AceStepFaithfulCheckpointLoader",
            "widgets": {"ckpt_name": comfy.models["official"]},
        },
        "cond": {
            "type": "AceStepFaithfulEncodePrompt",
            "widgets": {"prompt": PROMPT, "lyrics": LYRICS},
            "inputs": {
                "text_encoder": ["ckpt", "text_encoder"],
                "lyric_tokenizer": ["ckpt", "lyric_tokenizer"],
            },
        },
    }


def custom_sampling(
    name: str, case: dict, latent: list, sampler: list | None = None, noise: list | None = None
):
    """Nodes ``<name>_*``: our guider, schedule (and by default our noise and sampler) into SamplerCustomAdvanced,
    its output saved as a latent file ``custom/<name>``."""
    guider = {k: case[k] for k in GUIDER_KEYS if k in case}
    nodes = {
        f"{name}_guider": {
            "type": "AceStepFaithfulGuider",
            "widgets": guider,
            "inputs": {"dit": ["ckpt", "dit"], "positive": ["cond", "conditioning"]},
        },
        f"{name}_sigmas": {
            "type": "AceStepFaithfulScheduler",
            "widgets": {"steps": case.get("infer_step", 60), "oss_steps": case.get("oss_steps", "")},
        },
        f"{name}_run": {
            "type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": noise or [f"{name}_noise", "noise"],
                "guider": [f"{name}_guider", "guider"],
                "sampler": sampler or [f"{name}_sampler", "sampler"],
                "sigmas": [f"{name}_sigmas", "sigmas"],
                "latent_image": latent,
            },
        },
        f"{name}_save": {
            "type": "SaveLatent",
            "widgets": {"filename_prefix": f"custom/{name}"},
            "inputs": {"samples": [f"{name}_run", "output"]},
        },
    }
    if noise is None:
        nodes[f"{name}_noise"] = {"type": "AceStepFaithfulNoise", "widgets": {"noise_seed": case["seed"]}}
    if sampler is None:
        widgets = {
            "sampler": case.get("scheduler_type", "euler"),
            "omega_scale": case.get("omega_scale", 10.0),
        }
        nodes[f"{name}_sampler"] = {"type": "AceStepFaithfulSamplerSelect", "widgets": widgets}
    return nodes


def numbered(nodes: dict) -> tuple[dict, dict]:
    """The frontend wants numeric node ids: the nodes numbered 1, 2, ... with their links, and name -> id."""
    ids = {name: str(i) for i, name in enumerate(nodes, 1)}
    out = {}
    for name, node in nodes.items():
        node = dict(node)
        node["inputs"] = {k: [ids[src], slot] for k, (src, slot) in node.get("inputs", {}).items()}
        out[ids[name]] = node
    return out, ids


def saved_latent(comfy, run, node: str) -> torch.Tensor:
    (item,) = run.outputs[node]["latents"]
    return load_file(str(comfy.output / item["subfolder"] / item["filename"]))["latent_tensor"]


def saved_audio(comfy, run, node: str) -> tuple[np.ndarray, int]:
    (item,) = run.outputs[node]["audio"]
    return soundfile.read(comfy.output / item["subfolder"] / item["filename"], always_2d=True)


def test_the_nodes_give_comfyuis_custom_sampling_types(comfy):
    info = comfy.get("/object_info")
    outputs = {
        "AceStepFaithfulGuider": ["GUIDER"],
        "AceStepFaithfulSamplerSelect": ["SAMPLER"],
        "AceStepFaithfulScheduler": ["SIGMAS"],
        "AceStepFaithfulNoise": ["NOISE"],
    }
    for name, types in outputs.items():
        node = info[name]
        assert node["output"] == types, name
        assert node["display_name"].startswith("ACE-Step ") and node["category"] == "audio/ACE-Step", name
        inputs = {**node["input"].get("required", {}), **node["input"].get("optional", {})}
        assert all(options.get("tooltip") for _, options in inputs.values()), name
    # they plug into core SamplerCustomAdvanced's sockets
    core = info["SamplerCustomAdvanced"]["input"]["required"]
    assert [core[k][0] for k in ("noise", "guider", "sampler", "sigmas")] == [
        "NOISE",
        "GUIDER",
        "SAMPLER",
        "SIGMAS",
    ]


@pytest.mark.parametrize("name", list(CASES))
def test_samplercustomadvanced_with_our_pieces_equals_the_official_pipeline(comfy, frontend, models, name):
    case = CASES[name]
    nodes = loaders(comfy)
    nodes["latent"] = {
        "type": "AceStepFaithfulEmptyLatent",
        "widgets": {"seconds": SECONDS, "batch_size": case.get("batch_size", 1)},
    }
    nodes.update(custom_sampling(name, case, ["latent", "latent"]))
    spec, ids = numbered(nodes)
    run = frontend.run(frontend.build(spec))
    assert run.ok, run

    ours = saved_latent(comfy, run, ids[f"{name}_save"])
    ref = official(models, case).latents
    assert ours.shape == ref.shape == (case.get("batch_size", 1), 8, 16, 21)
    err = rel_err(ours, ref)
    print(f"{name}: relative difference to pipeline.generate {err:.3g}")
    assert err < TOLERANCE


def test_equals_the_all_in_one_sampler_node(comfy, frontend):
    """The same song from ACE-Step Sampler and from SamplerCustomAdvanced with our pieces (seeds seed + i)."""
    name, case = "heun_cfg_batch", CASES["heun_cfg_batch"]
    nodes = loaders(comfy)
    nodes["latent"] = {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": SECONDS, "batch_size": 2}}
    nodes.update(custom_sampling(name, case, ["latent", "latent"]))
    widgets = {k: case[k] for k in GUIDER_KEYS if k in case}
    widgets.update(
        seed=case["seed"],
        steps=case["infer_step"],
        scheduler=case["scheduler_type"],
        omega_scale=case["omega_scale"],
    )
    nodes["node"] = {
        "type": "AceStepFaithfulSampler",
        "widgets": widgets,
        "inputs": {
            "dit": ["ckpt", "dit"],
            "conditioning": ["cond", "conditioning"],
            "latent": ["latent", "latent"],
        },
    }
    nodes["node_save"] = {
        "type": "SaveLatent",
        "widgets": {"filename_prefix": "custom/node"},
        "inputs": {"samples": ["node", "latent"]},
    }
    spec, ids = numbered(nodes)
    run = frontend.run(frontend.build(spec))
    assert run.ok, run
    ours, node = saved_latent(comfy, run, ids[f"{name}_save"]), saved_latent(comfy, run, ids["node_save"])
    assert ours.shape == node.shape == (2, 8, 16, 21)
    assert rel_err(ours, node) < TOLERANCE


def test_core_samplers_and_noise_with_our_guider(comfy, frontend):
    """KSamplerSelect's samplers take our guider's x0 predictions; RandomNoise and DisableNoise our latents."""
    nodes = loaders(comfy)
    nodes["latent"] = {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": SECONDS}}
    nodes["random"] = {"type": "RandomNoise", "widgets": {"noise_seed": 5}}
    nodes["none"] = {"type": "DisableNoise"}
    case = dict(CASES["euler_apg"], infer_step=4)
    for sampler in ("euler", "dpmpp_2m"):
        nodes[f"{sampler}_select"] = {"type": "KSamplerSelect", "widgets": {"sampler_name": sampler}}
        nodes.update(
            custom_sampling(
                sampler, case, ["latent", "latent"], [f"{sampler}_select", "SAMPLER"], ["random", "NOISE"]
            )
        )
    # our sampler with core noise, and with no noise at all (from zeros: a deterministic, quiet result)
    nodes.update(custom_sampling("ours_random", case, ["latent", "latent"], noise=["random", "NOISE"]))
    nodes.update(custom_sampling("ours_none", case, ["latent", "latent"], noise=["none", "NOISE"]))
    nodes["denoised"] = {
        "type": "SaveLatent",
        "widgets": {"filename_prefix": "custom/denoised"},
        "inputs": {"samples": ["euler_run", "denoised_output"]},
    }
    nodes["decode"] = {
        "type": "AceStepFaithfulDecodeLatent",
        "inputs": {"latent": ["euler_run", "output"], "vae": ["ckpt", "vae"]},
    }
    nodes["audio"] = {
        "type": "AceStepFaithfulSaveAudio",
        "widgets": {"filename_prefix": "custom/core_euler", "format": "wav"},
        "inputs": {"audio": ["decode", "audio"]},
    }
    spec, ids = numbered(nodes)
    run = frontend.run(frontend.build(spec))
    assert run.ok, run

    for name in ("euler", "dpmpp_2m", "ours_random", "ours_none", "denoised"):
        latent = saved_latent(comfy, run, ids[name if name == "denoised" else f"{name}_save"])
        assert latent.shape == (1, 8, 16, 21), name
        assert torch.isfinite(latent).all(), name
        assert latent.std() > 0.01, name
    audio, rate = saved_audio(comfy, run, ids["audio"])
    from acestep_models.v1.music_dcae import samples_for_frames

    assert (rate, audio.shape) == (48000, (samples_for_frames(21), 2))
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio**2)) > 1e-4


def test_comfyuis_native_ace_latent_through_our_pieces_to_audio(comfy, frontend, models):
    """EmptyAceStepLatentAudio -> our custom sampling -> ACE-Step Latent to Audio: ComfyUI's own empty ACE latent
    has our shape and scaling, so the song equals the official pipeline's, latent and decoded audio."""
    case = CASES["euler_apg"]
    nodes = loaders(comfy)
    nodes["latent"] = {"type": "EmptyAceStepLatentAudio", "widgets": {"seconds": SECONDS, "batch_size": 1}}
    nodes.update(custom_sampling("native", case, ["latent", "LATENT"]))
    nodes["decode"] = {
        "type": "AceStepFaithfulDecodeLatent",
        "inputs": {"latent": ["native_run", "output"], "vae": ["ckpt", "vae"]},
    }
    nodes["audio"] = {
        "type": "AceStepFaithfulSaveAudio",
        "widgets": {"filename_prefix": "custom/native", "format": "wav"},
        "inputs": {"audio": ["decode", "audio"]},
    }
    spec, ids = numbered(nodes)
    run = frontend.run(frontend.build(spec))
    assert run.ok, run

    ref = official(models, case, decode=True)
    ours = saved_latent(comfy, run, ids["native_save"])
    assert ours.shape == ref.latents.shape
    assert rel_err(ours, ref.latents) < TOLERANCE
    audio, rate = saved_audio(comfy, run, ids["audio"])
    assert rate == ref.sample_rate == 48000
    ref_audio = ref.audio[0].T.numpy()  # [N, 2]
    assert audio.shape == ref_audio.shape
    err = np.linalg.norm(audio - ref_audio) / np.linalg.norm(ref_audio)
    print(f"decoded audio: relative difference to pipeline.generate {err:.3g}")
    assert err < TOLERANCE


def test_a_latent_noise_mask_keeps_the_unmasked_frames(comfy, frontend):
    """SetLatentNoiseMask on an encoded song: the masked seconds are regenerated, every other frame stays the
    source's, with our sampler and with core euler."""
    case = CASES["euler_apg"]
    nodes = loaders(comfy)
    nodes["load"] = {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": "tone.wav"}}
    nodes["encode"] = {
        "type": "AceStepFaithfulEncodeAudio",
        "inputs": {"audio": ["load", "audio"], "vae": ["ckpt", "vae"]},
    }
    nodes["source"] = {
        "type": "SaveLatent",
        "widgets": {"filename_prefix": "custom/source"},
        "inputs": {"samples": ["encode", "latent"]},
    }
    nodes["mask"] = {
        "type": "AceStepFaithfulMaskFromSeconds",
        "widgets": {"ranges": "1-2"},
        "inputs": {"latent": ["encode", "latent"]},
    }
    nodes["masked"] = {
        "type": "SetLatentNoiseMask",
        "inputs": {"samples": ["encode", "latent"], "mask": ["mask", "mask"]},
    }
    nodes["core"] = {"type": "KSamplerSelect", "widgets": {"sampler_name": "euler"}}
    nodes.update(custom_sampling("ours", case, ["masked", "LATENT"]))
    nodes.update(custom_sampling("core", case, ["masked", "LATENT"], sampler=["core", "SAMPLER"]))
    spec, ids = numbered(nodes)
    run = frontend.run(frontend.build(spec))
    assert run.ok, run

    source = saved_latent(comfy, run, ids["source"])
    inside = torch.zeros(source.shape[-1], dtype=torch.bool)
    inside[int(1 * 44100 / 4096) : int(2 * 44100 / 4096)] = (
        True  # ACE-Step Mask from Seconds' frames for 1-2 s
    )
    for name in ("ours", "core"):
        out = saved_latent(comfy, run, ids[f"{name}_save"])
        assert out.shape == source.shape
        assert torch.equal(out[..., ~inside], source[..., ~inside]), name
        assert (out[..., inside] - source[..., inside]).abs().mean() > 0.1, name
        assert torch.isfinite(out).all()
