"""Users' files load unchanged, whichever layout they come in: the official Hugging Face folder, ComfyUI's
all-in-one checkpoint, or one file per part. Each layout is written from the same tiny official weights, loaded the
way a user's file is, and must give the very same tensors."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from acestep_models.common.weights import read_json
from acestep_models.v1 import checkpoint
from tiny_checkpoints import TINY, write_all_in_one, write_split


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {
        "all_in_one": write_all_in_one(root / "ace_step_v1_3.5b.safetensors"),
        **write_split(root / "split"),
    }


def test_official_folder_root_or_part_folder(layouts):
    dit = checkpoint.load_dit(TINY)
    assert same_weights(dit, checkpoint.load_dit(TINY / "ace_step_transformer"))
    assert len(dit.transformer_blocks) == 20


def test_dit_from_all_in_one_and_split_file_equals_official_folder(layouts):
    official = checkpoint.load_dit(TINY)
    assert same_weights(official, checkpoint.load_dit(layouts["all_in_one"]))
    assert same_weights(official, checkpoint.load_dit(layouts["dit"]))


def test_text_encoder_and_tokenizer_from_every_layout(layouts):
    model, tok = checkpoint.load_text_encoder(TINY)
    prompt = ["funk, pop, soul, rock, melodic, guitar, drums, bass, keyboard, percussion, 105 BPM"]
    ids, mask = tok(prompt)
    hidden = model(ids, mask)
    for source in (layouts["all_in_one"], layouts["text_encoder"]):
        m2, tok2 = checkpoint.load_text_encoder(source)  # tokenizer from the spiece_model tensor
        ids2, mask2 = tok2(prompt)
        assert torch.equal(ids, ids2) and torch.equal(mask, mask2)
        assert torch.equal(hidden, m2(ids2, mask2))


def test_dtype_is_applied_at_load():
    dit = checkpoint.load_dit(TINY, dtype=torch.bfloat16)
    assert {p.dtype for p in dit.parameters()} == {torch.bfloat16}


def test_wrong_part_or_file_type_says_what_the_file_is(layouts, tmp_path):
    with pytest.raises(ValueError, match=r"holds no dit weights \(it holds: text_encoder\)"):
        checkpoint.load_dit(layouts["text_encoder"])
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"model.ckpt is not a .safetensors file"):
        checkpoint.load_dit(ckpt)
    with pytest.raises(FileNotFoundError, match="no such file"):
        checkpoint.load_dit(tmp_path / "missing.safetensors")
    other = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4)}, str(other))
    with pytest.raises(ValueError, match="not an ACE-Step file"):
        checkpoint.load_dit(other)


def test_text_encoder_file_without_tokenizer_says_where_to_put_it(tmp_path):
    from tiny_checkpoints import official_part

    sd, _ = official_part("text_encoder")
    lone = tmp_path / "umt5_base.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(lone))
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        checkpoint.load_text_encoder(lone)


def test_music_dcae_from_every_layout(layouts):
    official = checkpoint.load_music_dcae(TINY)
    assert same_weights(official, checkpoint.load_music_dcae(layouts["all_in_one"]))
    assert same_weights(official, checkpoint.load_music_dcae(layouts["vae"]))  # ComfyUI's weight-norm names
    parts = checkpoint.load_music_dcae(TINY / "music_dcae_f8c8", vocoder_path=TINY / "music_vocoder")
    assert same_weights(official, parts)
    latents = torch.randn(1, 8, 16, 12, generator=torch.Generator().manual_seed(0))
    audio = official.decode(latents)
    assert audio.shape[:2] == (1, 2) and torch.isfinite(audio).all()


def test_released_all_in_one_layout_fits_every_part():
    """Every tensor of ComfyUI's full-size ace_step_v1_3.5b.safetensors (names and shapes read off ComfyUI's
    classes) lands on a parameter of our full-size models, sizes read off the shapes alone, nothing left over."""
    from acestep_models.v1.dit import IGNORED_KEYS, ACEStepTransformer, DiTConfig
    from acestep_models.v1.music_dcae import MusicDCAE, MusicDCAEConfig
    from acestep_models.v1.text_encoder import UMT5Config, UMT5EncoderModel

    listing = read_json(TINY.parent / "comfyui_all_in_one_keys.json")
    shapes = {k: [int(n) for n in v[0]] for k, v in listing.items() if not k.endswith("spiece_model")}
    prefixes = []

    def part(name):
        prefix = checkpoint.find_prefix(list(shapes), name)
        prefixes.append(prefix)
        sd = {
            k[len(prefix) :]: torch.empty(s, device="meta") for k, s in shapes.items() if k.startswith(prefix)
        }
        return checkpoint.to_official_keys(name, sd)

    def fits(model_cls, config, sd, ignore=None):
        with torch.device("meta"):
            ours = {k: list(v.shape) for k, v in model_cls(config).state_dict().items()}
        skip = re.compile(ignore).match if ignore else (lambda _k: False)
        return ours == {k: list(v.shape) for k, v in sd.items() if not skip(k)}

    dit = part("dit")
    assert DiTConfig.from_state_dict(dit) == DiTConfig()
    assert fits(ACEStepTransformer, DiTConfig(), dit, IGNORED_KEYS)

    vae = {f"dcae.{k}": v for k, v in part("dcae").items()} | {
        f"vocoder.{k}": v for k, v in part("vocoder").items()
    }
    assert MusicDCAEConfig.from_state_dict(vae) == MusicDCAEConfig()
    assert fits(MusicDCAE, MusicDCAEConfig(), vae)

    te = part("text_encoder")
    assert UMT5Config.from_state_dict(te) == UMT5Config()
    assert fits(UMT5EncoderModel, UMT5Config(), te)

    leftover = {k for k in shapes if not k.startswith(tuple(prefixes))}
    assert leftover == {
        "text_encoders.umt5base.logit_scale"
    }  # ComfyUI's, unused (spiece_model is the tokenizer)


# --- files whose sizes the tensors cannot tell, and broken files ---------------------------------------------------


def test_a_dit_of_another_width_needs_its_config_and_says_how_to_give_it(tmp_path):
    from tiny_checkpoints import official_part

    sd, config = official_part("dit")  # the tiny DiT: 32 wide, 2 heads of 16
    lone = tmp_path / "narrow.safetensors"
    save_file(sd, str(lone))  # without the config the tiny files carry in their metadata
    with pytest.raises(ValueError) as caught:
        checkpoint.load_dit(lone)
    message = str(caught.value)
    assert "narrow.safetensors holds a DiT 32 wide, not the released 2560 (20 heads of 128)" in message
    assert "cannot be read from the tensors" in message and "config.json" in message
    assert "groups must be" not in message
    # as the message says: the weights with their config.json in a folder of their own
    folder = tmp_path / "narrow"
    folder.mkdir()
    lone.rename(folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
    dit = checkpoint.load_dit(folder)
    assert dit.config.num_attention_heads == 2 and dit.config.attention_head_dim == 16


def test_a_partial_dit_names_the_missing_tensor(tmp_path):
    from tiny_checkpoints import official_part

    sd, _ = official_part("dit")
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in sd.items() if not k.startswith("t_block.")}, str(partial))
    with pytest.raises(ValueError, match=r"partial.safetensors lacks the tensor 't_block.1.weight'"):
        checkpoint.load_dit(partial)


@pytest.mark.parametrize(
    "cut, says",
    [
        (0, "it is empty (0 bytes)"),
        (20, "it is truncated (its header alone needs"),
        (0.5, "it is truncated (its tensors need"),
    ],
)
def test_a_broken_weights_file_says_what_is_wrong(layouts, tmp_path, cut, says):
    whole = layouts["dit"].read_bytes()
    broken = tmp_path / "dit.safetensors"
    broken.write_bytes(whole[: int(len(whole) * cut) if isinstance(cut, float) else cut])
    with pytest.raises(ValueError) as caught:
        checkpoint.load_dit(broken)
    message = str(caught.value)
    assert message.startswith(f"cannot read dit.safetensors: {says}"), message
    assert "A .safetensors weights file was expected" in message and "deserializing" not in message
