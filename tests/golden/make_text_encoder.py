"""Golden fixtures for the UMT5 text encoder and its tokenizer, produced by the OFFICIAL ACE-Step code.

    ACESTEP_REF=/work/ref/ACE-Step CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 \
        /work/venvs/ref/bin/python tests/golden/make_text_encoder.py

Writes
- tests/golden/tiny/umt5-base/: the official folder layout (config.json, model.safetensors, tokenizer.json,
  tokenizer_config.json, special_tokens_map.json; like the released folder, no spiece.model). The model is
  transformers' ``UMT5EncoderModel(config)`` with every parameter redrawn (seeded) and ``save_pretrained``; the
  tokenizer is a tiny sentencepiece unigram model trained here on the multilingual TRAINING_TEXT (T5 specials
  pad=0, eos=1, unk=2, byte fallback like umt5's), converted by transformers' T5 converter and saved by
  ``T5TokenizerFast.save_pretrained``.
- tests/golden/text_encoder/spiece.model: that sentencepiece model (what ComfyUI's all-in-one file carries as
  ``text_encoders.umt5base.spiece_model`` bytes).
- tests/golden/text_encoder/tokens.json: the ids and masks the official ``get_text_embeddings`` tokenizer call
  gives for PROMPTS, one call per prompt and one batched call.
- tests/golden/text_encoder/outputs.safetensors: the official ``get_text_embeddings`` (float32 and bfloat16) and
  ``get_text_embeddings_null`` (ERG, tau 0.01 on blocks 8-9) outputs for HIDDEN_PROMPTS, batched.

The official methods run on a bare ``ACEStepPipeline`` holding only the text encoder and tokenizer, loaded as
``ACEStepPipeline.load_checkpoint`` loads them (``from_pretrained(..., torch_dtype=dtype)`` then ``.to(dtype)``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

REF = os.environ.get("ACESTEP_REF")
if not REF:
    sys.exit(
        "make_text_encoder.py: set ACESTEP_REF to a checkout of the official ACE-Step repository (d612523)"
    )
sys.path.insert(0, REF)

import sentencepiece  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from acestep.pipeline_ace_step import ACEStepPipeline  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoTokenizer, T5Tokenizer, T5TokenizerFast, UMT5Config, UMT5EncoderModel  # noqa: E402
from transformers.convert_slow_tokenizer import convert_slow_tokenizer  # noqa: E402

torch.set_float32_matmul_precision("highest")  # the pipeline import set "high"
torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*legacy behaviour.*")

HERE = Path(__file__).resolve().parent
TINY_DIR = HERE / "tiny" / "umt5-base"
OUT_DIR = HERE / "text_encoder"
SEED = 1234

SP_VOCAB = 1000  # sentencepiece pieces (3 specials + 256 byte pieces + 741 learned)
EXTRA_IDS = 24  # <extra_id_N> added by the T5 tokenizer after the pieces (umt5: 300)
# umt5-base sizes scaled down; 11 blocks so that the official ERG hooks (blocks 8, 9) exist and a wrong range
# (8..10 inclusive) would change the output; real bucket settings so that 256-token prompts reach the log buckets.
TINY_CONFIG = dict(
    vocab_size=1056,  # pieces + extra ids + unused rows, as umt5's 256000 + 300 + 84
    d_model=32,  # = the tiny DiT's text_embedding_dim
    d_kv=8,
    d_ff=64,
    num_layers=11,
    num_decoder_layers=11,
    num_heads=4,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    tokenizer_class="T5Tokenizer",
)

TRAINING_TEXT = """
Upbeat electronic dance music with heavy bass, bright synth leads and a steady four on the floor kick drum.
A melancholic piano ballad with soft strings, gentle female vocals and a slow tempo around 70 bpm.
Aggressive heavy metal with distorted guitars, double kick drums, screaming vocals and fast guitar solos.
Smooth jazz for a late night lounge: saxophone, upright bass, brushed drums and warm electric piano chords.
Lo-fi hip hop beats to relax and study to, with vinyl crackle, mellow keys, tape hiss and a lazy groove.
Epic orchestral soundtrack, cinematic brass, choir, timpani, rising tension and a triumphant final chorus.
Country folk song with acoustic guitar, banjo, fiddle, harmonica and a storytelling male voice.
Reggae groove with offbeat guitar skanks, deep dub bass, organ bubble and relaxed vocals about summer.
Funky disco track, slap bass, wah guitar, horn section, strings, handclaps and a catchy falsetto hook.
Ambient drone with evolving pads, field recordings of rain, distant bells and very long reverb tails.
Trap beat with rolling hi-hats, booming 808 bass, dark bells, autotuned rap verses and a chanted hook.
Bossa nova with nylon string guitar, light percussion, flute melody and an intimate whispered voice.
Classic rock anthem, crunchy power chords, big drums, singalong chorus, guitar solo and a key change.
Drum and bass at 174 bpm, chopped amen breaks, reese bass, atmospheric pads and MC vocals.
Indie pop with jangly guitars, dreamy synths, reverb drenched vocals and a nostalgic summer feeling.
Blues shuffle with slide guitar, harmonica, walking bass, Hammond organ and a gritty, soulful singer.
Techno track, pounding kick, hypnotic acid bassline, industrial percussion, dark warehouse atmosphere.
Gospel choir, clapping hands, piano, Hammond organ, uplifting lyrics and powerful lead vocals.
Chiptune melody with square waves, arpeggios, noise drums and an 8-bit video game adventure mood.
Acoustic singer-songwriter, fingerpicked guitar, cello, honest lyrics about love, loss and home.
pop, rock, female vocals, guitar, 120 bpm, energetic, catchy chorus, happy, bright, radio friendly
hip hop, rap, male vocals, boom bap, 90 bpm, sampled drums, scratching, jazzy chords, vinyl
edm, house, 128 bpm, piano stabs, vocal chops, sidechain, festival, euphoric drop, build up
rnb, soul, neo soul, smooth, sensual, falsetto, electric piano, sub bass, late night, 85 bpm
metal, metalcore, breakdown, growl, clean chorus, drop tuning, blast beats, 180 bpm, intense
classical, string quartet, violin, viola, cello, baroque, counterpoint, elegant, calm, chamber
ambient, drone, meditation, ethereal, pads, slow, peaceful, nature sounds, healing, spacious
kpop, dance, synthesizer, strong beat, rap verse, high energy, idol group, catchy, bright
folk, acoustic, banjo, mandolin, harmony vocals, campfire, warm, nostalgic, storytelling
latin, reggaeton, dembow, perreo, 95 bpm, spanish vocals, party, summer, tropical, dance
Música latina con guitarra acústica, percusión suave, trompetas brillantes y una voz masculina cálida.
Una canción de amor lenta con piano, cuerdas y una cantante que susurra sobre la lluvia de la noche.
Flamenco moderno con palmas, cajón, guitarra rasgueada y una voz rota llena de pasión y tristeza.
Chanson française mélancolique avec piano, violoncelle, accordéon et une voix douce qui raconte l'hiver.
Une musique électronique entraînante, des basses profondes, des nappes de synthé et un refrain joyeux.
Deutscher Hip-Hop mit schweren Beats, dunklen Synthesizern, schnellem Rap und einem eingängigen Refrain.
Ein ruhiges Klavierstück über den Herbst, mit Streichern, Regen am Fenster und viel Nachhall.
Canzone italiana d'amore con mandolino, fisarmonica, orchestra d'archi e una voce tenorile potente.
Samba brasileira com cavaquinho, pandeiro, surdo, violão de sete cordas e coro animado de carnaval.
Uma balada suave em português, com violão, piano e uma voz feminina cheia de saudade.
Музыка в стиле рок с электрогитарами, мощными барабанами и хриплым мужским вокалом.
Нежная колыбельная с арфой, флейтой и тихим женским голосом, медленный темп и тёплое настроение.
Электронная танцевальная музыка, быстрый ритм, глубокий бас, синтезаторы и яркий припев.
流行音乐，女声，钢琴，温柔的旋律，适合夜晚聆听，副歌朗朗上口。
中国风，古筝，笛子，二胡，悠扬，抒情，慢节奏，山水之间的故事。
摇滚乐，电吉他，鼓，贝斯，激情，青春，自由，大声唱出来。
说唱，嘻哈，节奏感强，低音，城市，夜晚，霓虹灯，快节奏的歌词。
民谣，木吉他，口琴，简单的和弦，关于故乡和远方的歌。
电子舞曲，合成器，强烈的节拍，派对，狂欢，灯光，跳舞到天亮。
日本のロック、エレキギター、力強いドラム、明るい雰囲気、青春の歌。
アニメの主題歌、女性ボーカル、ポップ、速いテンポ、キラキラしたシンセサイザー。
静かなピアノ曲、雨の夜、切ないメロディー、ストリングス、ゆっくりとしたテンポ。
シティポップ、八十年代、ベースライン、サックス、夜のドライブ、懐かしい気分。
한국 발라드, 피아노, 감성적인 남성 보컬, 느린 템포, 이별에 관한 가사.
케이팝, 댄스, 신디사이저, 강렬한 비트, 중독성 있는 후렴, 화려한 무대.
힙합, 랩, 묵직한 베이스, 도시의 밤, 빠른 플로우, 자신감 넘치는 분위기.
인디 록, 기타, 드럼, 청춘, 여름밤, 자유로운 느낌의 노래.
موسيقى عربية هادئة مع العود والقانون وصوت دافئ يغني عن الحب والشوق.
हिंदी फिल्म संगीत, ढोलक, सितार, तबला, रोमांटिक गीत, मधुर आवाज़।
Türkçe pop şarkı, bağlama, darbuka, duygusal kadın vokali ve hüzünlü bir nakarat.
Piosenka rockowa po polsku, gitary elektryczne, mocna perkusja i chwytliwy refren.
Vietnamese ballad, đàn bầu, giọng hát nữ nhẹ nhàng, nhịp chậm, buồn man mác.
Ελληνική μουσική με μπουζούκι, κιθάρα και ζεστή φωνή για το καλοκαίρι.
Tempo 60, 72, 84, 96, 100, 110, 120, 128, 140, 150, 160, 174 and 200 beats per minute.
Keys: C major, A minor, G major, E minor, D major, B minor, F major, D minor, B flat, E flat.
Time signatures 4/4, 3/4, 6/8, 7/8 and 5/4; duration 30s, 60s, 120s, 240s; 44.1 kHz stereo.
"""

# Prompts for the tokenizer comparison: tags, sentences, scripts, whitespace and normalisation corner cases,
# characters outside the tiny vocabulary (<unk> runs), literal special tokens, prompts longer than 256 tokens.
PROMPTS = [
    "pop, rock, female vocals, guitar, 120 bpm, energetic",
    "Upbeat electronic dance music with heavy bass and bright synth leads",
    "",
    " ",
    "   leading spaces",
    "trailing spaces   ",
    "multiple    inner   spaces,and,commas,,, ;;",
    "tabs\tand\nnewlines\r\nmixed",
    "流行音乐，女声，钢琴，温柔的旋律",
    "日本のロック、エレキギター、力強いドラム",
    "한국 발라드, 피아노, 감성적인 남성 보컬",
    "Música latina con guitarra acústica y voz cálida",
    "Музыка в стиле рок",
    "emoji 🎸🥁🎹 party 🎉🎉 night",
    "rare chars: ♫ ♪ ∞ ※ 𝄞 ☃ ẞ Ǆ ﬁ ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ①②③ ㈱",
    "accents: e\u0301 vs é, n\u0303 vs ñ, Å vs A\u030a",
    "zero\u200bwidth and no\u00a0break space and ideographic\u3000space",
    "quotes “smart” ‘single’ «guillemets» — dashes – ... …",
    "UPPER lower MiXeD 1234567890 3.14 1/4 #hashtag @mention http://x.y/z?a=b&c=d",
    "special tokens literal </s> <pad> <unk> <extra_id_0> inside <extra_id_23><extra_id_24>",
    "ends with eos</s>",
    "arabic عربي hindi हिंदी thai ไทย hebrew עברית greek ελληνικά",
    "control \x07 bell \x00 nul \x1b esc",
    "\u2581already\u2581metaspace \u2581 char",
    ", ".join(["pop", "rock", "jazz", "lo-fi", "drum and bass", "k-pop", "trap", "metal"] * 12),
    "钢琴，" * 100,
    "长" * 300,
    " ".join(f"word{i}" for i in range(400)),
]
# Prompts whose hidden states are recorded (batched, so padding and the 256-token truncation are exercised).
HIDDEN_PROMPTS = [PROMPTS[i] for i in (0, 1, 2, 8, 13, 24)]


def train_sentencepiece() -> bytes:
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.strip().splitlines()),
        model_writer=buf,
        model_type="unigram",
        vocab_size=SP_VOCAB,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        byte_fallback=True,
        character_coverage=1.0,
        num_threads=1,
        seed_sentencepiece_size=100000,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return buf.getvalue()


def save_tokenizer(spiece_path: Path) -> None:
    """The fast tokenizer files as transformers writes them. Converted from the slow tokenizer (legacy Metaspace,
    prepend "always"): transformers 4.50's ``T5TokenizerFast(vocab_file=...)`` passes add_prefix_space=None to the
    converter and writes prepend "never", which no released T5 tokenizer.json has."""
    slow = T5Tokenizer(str(spiece_path), extra_ids=EXTRA_IDS, legacy=True)
    fast = T5TokenizerFast(tokenizer_object=convert_slow_tokenizer(slow), extra_ids=EXTRA_IDS)
    fast.save_pretrained(TINY_DIR)


def save_model() -> None:
    """``UMT5EncoderModel(config)`` with all parameters redrawn so that activations stay O(1) and attention is
    neither uniform nor one-hot (norm weights around 1, relative biases of std 1)."""
    torch.manual_seed(SEED)
    config = UMT5Config(**TINY_CONFIG)
    model = UMT5EncoderModel(config).eval()
    d, inner, ff = config.d_model, config.num_heads * config.d_kv, config.d_ff
    std = {"q": d**-0.5, "k": d**-0.5, "v": d**-0.5, "o": inner**-0.5, "wi_0": d**-0.5, "wi_1": d**-0.5}
    std |= {"wo": ff**-0.5, "relative_attention_bias": 1.0, "shared": 1.0}
    with torch.no_grad():
        for name, p in model.named_parameters():
            kind = name.split(".")[-2]
            if kind in ("layer_norm", "final_layer_norm"):
                p.normal_(1.0, 0.25)
            else:
                p.normal_(0.0, std[kind])
    model.save_pretrained(TINY_DIR, safe_serialization=True)


class RecordingTokenizer:
    """The official tokenizer, keeping what each official call returned."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def __call__(self, *args, **kwargs):
        out = self.tokenizer(*args, **kwargs)
        self.calls.append((args, kwargs, out))
        return out

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def official_pipeline(dtype: torch.dtype, folder: Path = TINY_DIR) -> ACEStepPipeline:
    """A bare official pipeline with only the text encoder parts, loaded as ``load_checkpoint`` loads them."""
    pipe = ACEStepPipeline.__new__(ACEStepPipeline)
    pipe.device, pipe.dtype, pipe.cpu_offload = torch.device("cpu"), dtype, False
    model = UMT5EncoderModel.from_pretrained(folder, torch_dtype=dtype)
    pipe.text_encoder_model = model.to(pipe.device).eval().to(dtype).requires_grad_(False)
    pipe.text_tokenizer = RecordingTokenizer(AutoTokenizer.from_pretrained(folder))
    return pipe


def run_official(pipe: ACEStepPipeline, prompts: list[str]) -> dict[str, torch.Tensor]:
    """``get_text_embeddings`` and ``get_text_embeddings_null`` (official defaults) on one batch of prompts."""
    hidden, mask = pipe.get_text_embeddings(prompts)
    ids = pipe.text_tokenizer.calls[-1][2]["input_ids"]
    null = pipe.get_text_embeddings_null(prompts)
    return {"input_ids": ids, "attention_mask": mask, "last_hidden_state": hidden, "null_hidden_state": null}


def live(folder: Path, prompts: Path, dest: Path) -> None:
    """For the live parity test: the official outputs for a folder and a JSON list of prompts."""
    out = run_official(
        official_pipeline(torch.float32, folder), json.loads(prompts.read_text(encoding="utf-8"))
    )
    save_file({k: v.contiguous() for k, v in out.items()}, str(dest))


def main() -> None:
    shutil.rmtree(TINY_DIR, ignore_errors=True)
    TINY_DIR.mkdir(parents=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    spiece = OUT_DIR / "spiece.model"
    spiece.write_bytes(train_sentencepiece())
    save_tokenizer(spiece)
    save_model()

    pipe = official_pipeline(torch.float32)
    for p in PROMPTS:  # official calls have one prompt
        pipe.get_text_embeddings([p])
    pipe.get_text_embeddings(PROMPTS)
    single, batch = [c[2] for c in pipe.text_tokenizer.calls[:-1]], pipe.text_tokenizer.calls[-1][2]
    assert pipe.text_tokenizer.calls[-1][1] == dict(
        return_tensors="pt", padding=True, truncation=True, max_length=256
    )
    tokens = {
        "max_length": 256,
        "prompts": PROMPTS,
        "input_ids": [o["input_ids"][0].tolist() for o in single],
        "batch_input_ids": batch["input_ids"].tolist(),
        "batch_attention_mask": batch["attention_mask"].tolist(),
        "hidden_prompts": HIDDEN_PROMPTS,
    }
    with open(OUT_DIR / "tokens.json", "w", encoding="utf-8") as f:
        json.dump(tokens, f, ensure_ascii=False)

    outputs = run_official(pipe, HIDDEN_PROMPTS)
    outputs["last_hidden_state_bf16"] = official_pipeline(torch.bfloat16).get_text_embeddings(HIDDEN_PROMPTS)[
        0
    ]
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(OUT_DIR / "outputs.safetensors"))
    print(
        f"transformers {transformers.__version__}, sentencepiece {sentencepiece.__version__}, torch "
        f"{torch.__version__}; {len(PROMPTS)} prompts; hidden {tuple(outputs['last_hidden_state'].shape)}; "
        f"files: {sorted(p.name for p in TINY_DIR.iterdir())}"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--live", nargs=3, metavar=("FOLDER", "PROMPTS_JSON", "DEST"), help="run official code only"
    )
    args = ap.parse_args()
    if args.live:
        live(*map(Path, args.live))
    else:
        main()
