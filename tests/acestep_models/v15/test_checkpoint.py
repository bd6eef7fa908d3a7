"""ACE-Step 1.5 parts from every layout users have: the official folders, ComfyUI's split files and its
all-in-one checkpoint, with or without prefixes; a wrong file says what it holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from acestep_models.common.weights import CONFIG_METADATA, generations_in, read_safetensors
from acestep_models.v15 import checkpoint

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "golden" / "v15" / "tiny"  # the official root layout: acestep-v15-turbo/, vae/, ...
V1_TINY = ROOT / "tests" / "golden" / "tiny"


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = state(a), state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def dit():
    return checkpoint.load_dit(TINY / "acestep-v15-turbo")


def test_the_dit_loads_from_the_root_its_folder_and_comfyuis_files(tmp_path, dit):
    assert same(checkpoint.load_dit(TINY), dit)  # the official root: the one acestep-v15-* folder in it
    sd, _ = read_safetensors(TINY / "acestep-v15-turbo" / "model.safetensors")
    config = (TINY / "acestep-v15-turbo" / "config.json").read_text()
    meta = {CONFIG_METADATA.format(part="dit"): config}  # tiny sizes that shapes cannot tell (window)
    # ComfyUI's diffusion_models/acestep_v1.5_turbo.safetensors, and the same keys under ComfyUI's prefix
    save_file(sd, tmp_path / "acestep_v1.5_turbo.safetensors", metadata=meta)
    save_file(
        {f"model.diffusion_model.{k}": v for k, v in sd.items()},
        tmp_path / "prefixed.safetensors",
        metadata=meta,
    )
    assert same(checkpoint.load_dit(tmp_path / "acestep_v1.5_turbo.safetensors"), dit)
    assert same(checkpoint.load_dit(tmp_path / "prefixed.safetensors"), dit)
    assert generations_in(tmp_path / "prefixed.safetensors") == ["ACE-Step 1.5"]
    assert generations_in(TINY) == ["ACE-Step 1.5"] and generations_in(V1_TINY) == ["ACE-Step v1"]


def test_bfloat16_and_float8_dit(dit):
    bf16 = checkpoint.load_dit(TINY, dtype=torch.bfloat16)
    assert bf16.decoder.proj_in[1].weight.dtype == torch.bfloat16
    f8 = checkpoint.load_dit(TINY, dtype=torch.float32, weight_dtype=torch.float8_e4m3fn)
    assert f8.decoder.layers[0].self_attn.q_proj.weight.dtype == torch.float8_e4m3fn


def test_several_dits_in_one_root_ask_which(tmp_path):
    for name in ("acestep-v15-turbo", "acestep-v15-base"):
        (tmp_path / name).symlink_to(TINY / "acestep-v15-turbo", target_is_directory=True)
    with pytest.raises(
        ValueError, match="several ACE-Step 1.5 dit folders.*acestep-v15-base, acestep-v15-turbo"
    ):
        checkpoint.load_dit(tmp_path)
    assert checkpoint.load_dit(tmp_path / "acestep-v15-base") is not None


def test_silence_latent_is_read_beside_the_dit(tmp_path):
    folder = tmp_path / "acestep-v15-turbo"
    folder.mkdir()
    for f in ("config.json", "model.safetensors"):
        (folder / f).symlink_to(TINY / "acestep-v15-turbo" / f)
    assert checkpoint.load_silence_latent(folder) is None  # ComfyUI's files come without one
    silence = torch.randn(1, 3, 40)  # official file: [1, D, T]
    torch.save(silence, folder / checkpoint.SILENCE_LATENT)
    got = checkpoint.load_silence_latent(tmp_path)
    assert got.shape == (1, 40, 3) and torch.equal(got, silence.transpose(1, 2))


def test_a_file_of_the_wrong_generation_says_what_it_holds(tmp_path):
    v1_dit = V1_TINY / "ace_step_transformer" / "diffusion_pytorch_model.safetensors"
    with pytest.raises(ValueError, match=r"holds no dit weights \(it holds: ACE-Step v1 dit\)"):
        checkpoint.load_dit(v1_dit)
    vae = TINY / "vae" / "diffusion_pytorch_model.safetensors"
    with pytest.raises(ValueError, match=r"holds no dit weights \(it holds: vae\)"):
        checkpoint.load_dit(vae)
    from acestep_models.v1 import checkpoint as v1

    with pytest.raises(ValueError, match=r"holds no dit weights \(it holds: ACE-Step 1.5 dit\)"):
        v1.load_dit(TINY / "acestep-v15-turbo" / "model.safetensors")


def test_the_vae_loads_from_the_official_folder_and_the_root():
    vae = checkpoint.load_vae(TINY / "vae")
    assert same(checkpoint.load_vae(TINY), vae)
    assert vae.config.downsampling_ratios == (2, 4, 4, 6, 10)


def test_comfyuis_vae_file_decodes_as_comfyuis_own_oobleck(tmp_path):
    """ComfyUI's ace_1.5_vae.safetensors holds stable-audio-tools keys (``encoder.layers.N...``, SnakeBeta [C],
    torch's parametrized weight norm): ComfyUI's own AudioOobleckVAE makes a file, ours loads it and gives ComfyUI's
    outputs."""
    from tests.conftest import comfyui_root  # noqa: PLC0415

    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(comfyui_root())!r})
        from comfy.cli_args import args
        args.cpu = True
        import torch
        from safetensors.torch import save_file
        from comfy.ldm.audio.autoencoder import AudioOobleckVAE
        torch.manual_seed(0)
        m = AudioOobleckVAE(channels=4, latent_dim=2, c_mults=[1, 2, 3], strides=[2, 4, 6]).eval()
        with torch.no_grad():
            for name, p in m.named_parameters():  # ComfyUI's layers skip weight init: give every tensor values
                p.copy_(0.3 * torch.randn_like(p).abs() + 0.5 if "original0" in name else 0.3 * torch.randn_like(p))
            z = torch.randn(1, 2, 7)
            audio = torch.randn(1, 2, 48 * 10)
            out = {{"z": z, "audio": audio, "decoded": m.decode(z), "encoded": m.encoder(audio)}}
        sd = {{"vae." + k: v.contiguous() for k, v in m.state_dict().items()}}
        save_file(sd, "aio.safetensors")
        save_file({{k[4:]: v for k, v in sd.items()}}, "ace_1.5_vae.safetensors")
        save_file(out, "reference.safetensors")
        """
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    ref = load_file(tmp_path / "reference.safetensors")
    for name in ("ace_1.5_vae.safetensors", "aio.safetensors"):
        vae = checkpoint.load_vae(tmp_path / name)
        assert vae.config.downsampling_ratios == (2, 4, 6)
        with torch.no_grad():
            decoded = vae.decode(ref["z"])
            encoded = vae.encoder(ref["audio"])
        assert ((decoded - ref["decoded"]).norm() / ref["decoded"].norm()) < 1e-5
        assert ((encoded - ref["encoded"]).norm() / ref["encoded"].norm()) < 1e-5


def test_the_released_key_layouts_are_recognised():
    """Key names as ComfyUI's loaders read them (comfy/model_detection.py, comfy/sd.py, text_encoders/ace15.py)."""
    keys = [
        "model.diffusion_model.null_condition_emb",
        "model.diffusion_model.decoder.layers.0.self_attn.k_norm.weight",
        "model.diffusion_model.encoder.lyric_encoder.layers.0.self_attn.k_norm.weight",
        "vae.decoder.layers.1.layers.0.beta",
        "text_encoders.qwen3_06b.transformer.model.layers.0.self_attn.k_norm.weight",
    ]
    lay = checkpoint.LAYOUT
    assert lay.find_prefix(keys, "dit") == "model.diffusion_model."
    assert lay.find_prefix(keys, "vae") == "vae."
    assert lay.find_prefix(keys, "text_encoder") == "text_encoders.qwen3_06b.transformer.model."
    assert json.loads(json.dumps(checkpoint.OFFICIAL_WEIGHTS))["vae"] == "diffusion_pytorch_model.safetensors"


def test_the_text_encoder_loads_from_every_layout(tmp_path, monkeypatch):
    folder = TINY / "Qwen3-Embedding-0.6B"
    model, tokenizer = checkpoint.load_text_encoder(folder)
    assert same(checkpoint.load_text_encoder(TINY)[0], model)
    ids = tokenizer.encode("pop, synth", max_length=256)
    sd, _ = read_safetensors(folder / "model.safetensors")
    meta = {CONFIG_METADATA.format(part="text_encoder"): (folder / "config.json").read_text()}
    # ComfyUI's qwen_0.6b_ace15.safetensors: a Qwen3ForCausalLM save (model. prefix, lm_head)
    causal = {f"model.{k}": v for k, v in sd.items()} | {"lm_head.weight": sd["embed_tokens.weight"].clone()}
    save_file(causal, tmp_path / "qwen_0.6b_ace15.safetensors", metadata=meta)
    # its all-in-one file: the text encoder beside the DiT and a 5 Hz LM whose vocabulary holds audio codes
    dit_sd, _ = read_safetensors(TINY / "acestep-v15-turbo" / "model.safetensors")
    lm = {"layers.0.self_attn.k_norm.weight": torch.ones(2), "embed_tokens.weight": torch.zeros(151_670, 1)}
    aio = {f"model.diffusion_model.{k}": v for k, v in dit_sd.items()}
    aio |= {f"text_encoders.qwen3_2b.transformer.model.{k}": v for k, v in lm.items()}
    aio |= {f"text_encoders.qwen3_06b.transformer.model.{k}": v for k, v in sd.items()}
    save_file(aio, tmp_path / "ace_step_1.5_turbo_aio.safetensors", metadata=meta)
    for name in ("qwen_0.6b_ace15.safetensors", "ace_step_1.5_turbo_aio.safetensors"):
        loaded, tok = checkpoint.load_text_encoder(tmp_path / name, tokenizer=folder)
        assert same(loaded, model) and tok.encode("pop, synth", max_length=256) == ids
    # no tokenizer beside a ComfyUI file: ComfyUI's own Qwen vocabulary, or an error that says where to look
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match="text tokenizer not found.*COMFYUI_PATH"):
        checkpoint.load_text_encoder(tmp_path / "qwen_0.6b_ace15.safetensors")
