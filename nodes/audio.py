"""Audio in and out: load a file from ComfyUI's input folder (with upload), save wav/flac/ogg/mp3 with the workflow in
the file's metadata, and preview in the browser.

Everything uses ComfyUI's standard AUDIO ``{"waveform": [B, C, N] float32, "sample_rate": int}``, so core audio
and video nodes (trim, split channels, Save Video with audio...) take our audio and give us theirs.
"""

from __future__ import annotations

import hashlib
import io as pyio
import json
import os

import folder_paths
import numpy as np
import torch
from comfy.cli_args import args
from comfy_api.latest import io, ui

from .common import (
    CATEGORY,
    MAX_LATENT_SECONDS,
    advanced,
    check_audio,
    checks_numbers,
    explained,
    node_error,
)
from .latents import RANGES_HELP, frames_for_samples, parse_regions

# The browser's audio player on our nodes: the frontend draws a widget for inputs of this type (it is never sent
# back, hence optional).
AudioUI = io.Custom("AUDIO_UI")

FORMATS = {  # format -> (container, codec, extra codec options)
    "flac": ("flac", "flac", {}),
    "wav": ("wav", "pcm_f32le", {}),  # 32-bit float, as the official pipeline writes
    # ffmpeg's own Vorbis encoder (PyAV's ffmpeg has no libvorbis)
    "ogg": ("ogg", "vorbis", {"strict": "experimental"}),
    "mp3": ("mp3", "libmp3lame", {}),
}
QUALITIES = ["320k", "256k", "192k", "128k", "V0"]  # bit rate of mp3/ogg (V0: mp3 variable best quality)
OUTSIDE_INPUT = "this name points outside ComfyUI's input folder"


def _player() -> io.Input:
    return AudioUI.Input("audioUI", optional=True, tooltip="Player for the audio (fills in after a run).")


# --- loading -----------------------------------------------------------------------------------------------------------


def input_audio_files() -> list[str]:
    input_dir = folder_paths.get_input_directory()
    files = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["audio", "video"]))


def input_path(value: str) -> str | None:
    """The file a Load Audio name stands for (``song.wav``, ``take.flac [output]``), inside the input (or the
    annotated) folder; None when the name points outside it (``../``, an absolute path): ComfyUI's own lookup joins
    whatever it is given."""
    name, base = folder_paths.annotated_filepath(value)
    base = os.path.abspath(base or folder_paths.get_input_directory())
    path = os.path.abspath(os.path.join(base, name))
    return path if os.path.commonpath([base, path]) == base and path != base else None


def read_audio(
    path: str, start: float = 0.0, duration: float = 0.0, shown: str | None = None
) -> tuple[torch.Tensor, int, str]:
    """A file's audio as ([C, N] float32, rate, cut), from ``start`` seconds for ``duration`` (0: to the end);
    ``cut`` says when the file is cut short (its header announces more than it holds), else "".

    soundfile (libsndfile) reads wav/flac/ogg/mp3/aiff...; other containers (m4a, mp4, webm...) go through PyAV. A
    file neither can read is an ``AudioError`` saying what the file is (empty, text, an image...), named ``shown``."""
    import soundfile

    from ..acestep_models.common.audio_io import not_audio, truncation

    try:
        info = soundfile.info(path)
    except soundfile.LibsndfileError:
        wav, rate = _read_with_av(path, shown)
        first = int(start * rate)
        last = wav.shape[-1] if duration <= 0 else first + int(duration * rate)
        return wav[:, first:last], rate, ""
    rate = info.samplerate
    frames = -1 if duration <= 0 else int(duration * rate)
    try:
        data, rate = soundfile.read(
            path, start=int(start * rate), frames=frames, dtype="float32", always_2d=True
        )
    except (soundfile.LibsndfileError, RuntimeError):
        raise not_audio(path, shown) from None
    return torch.from_numpy(np.ascontiguousarray(data.T)), rate, truncation(info)


def _read_with_av(path: str, shown: str | None = None) -> tuple[torch.Tensor, int]:
    import av

    from ..acestep_models.common.audio_io import AudioError, not_audio
    from ..acestep_models.common.sniff import VIDEO, describe

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                if describe(path) not in VIDEO:  # ffmpeg opens images and text too, as "video"
                    raise not_audio(path, shown)
                raise AudioError(
                    f"cannot read audio file {shown or path}: it holds no audio stream (a video without sound?)"
                )
            stream = container.streams.audio[0]
            channels = stream.codec_context.channels
            chunks = []
            for frame in container.decode(stream):
                a = frame.to_ndarray()  # planar [C, n] or packed [1, n * C]
                chunks.append(a if a.shape[0] == channels else a.reshape(-1, channels).T)
            rate = stream.codec_context.sample_rate
    except av.error.FFmpegError:  # e.g. "[Errno 1094995529] Invalid data found when processing input"
        raise not_audio(path, shown) from None
    if not chunks:
        raise not_audio(path, shown)
    wav = torch.from_numpy(np.concatenate(chunks, axis=1))
    if not wav.dtype.is_floating_point:
        wav = wav.float() / float(torch.iinfo(wav.dtype).max + 1)
    return wav.float(), rate


class AceStepLoadAudio(io.ComfyNode):
    TITLE = "ACE-Step Load Audio"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulLoadAudio",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Loads an audio file from ComfyUI's input folder (upload one with the button), optionally "
            "a part of it. Its waveform shows on the node: play it, zoom, and drag on it to mark the regions to "
            "regenerate (or past either end to extend the song).",
            inputs=[
                io.Combo.Input(
                    "audio",
                    options=input_audio_files(),
                    upload=io.UploadType.audio,
                    tooltip="An audio (or video) file in ComfyUI's input folder.",
                ),
                advanced(
                    io.Float.Input(
                        "start_seconds",
                        default=0.0,
                        min=0.0,
                        max=1e6,
                        step=0.01,
                        tooltip="Start reading here.",
                    )
                ),
                advanced(
                    io.Float.Input(
                        "duration_seconds",
                        default=0.0,
                        min=0.0,
                        max=MAX_LATENT_SECONDS,
                        step=0.01,
                        tooltip="How much to read (0: to the end of the file).",
                    )
                ),
                io.String.Input(
                    "regions",
                    default="",
                    tooltip="Parts to regenerate, in seconds of the loaded audio: drag on the waveform to mark them, "
                    f"or type them ({RANGES_HELP}). Connect the regions output to ACE-Step Mask from Seconds.",
                ),
                _player(),
            ],
            outputs=[
                io.Audio.Output(display_name="audio", tooltip="The audio at the file's own sample rate."),
                io.String.Output(
                    display_name="regions",
                    tooltip="The regions as typed or drawn (for ACE-Step Mask from Seconds' ranges); checked "
                    "against the audio's length.",
                ),
            ],
        )

    @classmethod
    @checks_numbers
    def execute(
        cls, audio: str, start_seconds: float = 0.0, duration_seconds: float = 0.0, regions: str = "", **_
    ) -> io.NodeOutput:
        from ..acestep_models.common.audio_io import too_short

        path = input_path(audio)
        if path is None:
            raise node_error(
                cls.TITLE, OUTSIDE_INPUT, "Pick a file from the list (upload it first).", "audio", audio
            )
        with explained(cls.TITLE, "audio", audio, "Upload the file again, or pick another."):
            wav, rate, cut = read_audio(path, start_seconds, duration_seconds, shown=audio)
        if wav.shape[-1] == 0:
            raise node_error(
                cls.TITLE,
                f"nothing to read from {start_seconds:g} s on (the file is empty or shorter)",
                "Check the file and start_seconds.",
                "audio",
                audio,
            )
        out = {"waveform": wav[None], "sample_rate": rate}
        # NaN/inf in a float file: say so here, not three nodes later
        check_audio(cls.TITLE, "audio", out, value=audio, source="the file (re-export it)")
        short = too_short(wav.shape[-1], rate, cut)
        if short:  # a file cut short: say so here, not with a 0.09 s song three nodes later
            raise node_error(
                cls.TITLE,
                short,
                "Export or upload the file again (or check start_seconds and duration_seconds).",
                "audio",
                audio,
            )
        regions = (regions or "").strip()  # (None from a workflow saved before the input existed)
        if regions:  # say here, where they are drawn, if they do not fit the audio
            parse_regions(cls.TITLE, "regions", regions, frames_for_samples(wav.shape[-1], rate))
        return io.NodeOutput(out, regions)

    @classmethod
    def fingerprint_inputs(cls, audio: str, **_):
        path = input_path(audio)
        if path is None or not os.path.isfile(path):
            return audio
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    @classmethod
    def validate_inputs(cls, audio: str):
        if input_path(audio) is None:
            return f"{cls.TITLE}: '{audio}': {OUTSIDE_INPUT}; pick a file from the list."
        if not folder_paths.exists_annotated_filepath(audio):
            return (
                f"{cls.TITLE}: no audio file '{audio}' in ComfyUI's input folder; upload it or pick another."
            )
        return True


# --- saving ------------------------------------------------------------------------------------------------------------


def _seeds(prompt: dict | None) -> list[int]:
    seeds = []
    for node in (prompt or {}).values():
        for key in ("seed", "noise_seed"):
            v = node.get("inputs", {}).get(key) if isinstance(node, dict) else None
            if isinstance(v, int) and v not in seeds:
                seeds.append(v)
    return seeds


def file_metadata(hidden) -> dict[str, str]:
    """The prompt, workflow (and any other extra_pnginfo) and seeds, as ComfyUI's savers store them."""
    if args.disable_metadata or hidden is None:
        return {}
    meta = {}
    if hidden.prompt is not None:
        meta["prompt"] = json.dumps(hidden.prompt)
        seeds = _seeds(hidden.prompt)
        if seeds:
            meta["seed"] = ",".join(str(s) for s in seeds)
    for key, value in (hidden.extra_pnginfo or {}).items():
        meta[key] = json.dumps(value)
    return meta


def encode_file(waveform: torch.Tensor, rate: int, fmt: str, quality: str, metadata: dict[str, str]) -> bytes:
    """One song [C, N] as the bytes of a ``fmt`` file (PyAV/ffmpeg), metadata included."""
    import av

    container_fmt, codec, options = FORMATS[fmt]
    if fmt == "ogg" and waveform.shape[0] == 1:
        waveform = waveform.repeat(2, 1)  # ffmpeg's Vorbis encoder is stereo only
    layout = "mono" if waveform.shape[0] == 1 else "stereo"
    buf = pyio.BytesIO()
    with av.open(buf, mode="w", format=container_fmt) as container:
        if fmt == "wav":
            # The WAV muxer keeps only a few INFO tags: everything goes into "comment" as one JSON object.
            if metadata:
                container.metadata["comment"] = json.dumps(metadata)
        else:
            for key, value in metadata.items():
                container.metadata[key] = value
        stream = container.add_stream(codec, rate=rate, layout=layout, options=options)
        if fmt == "mp3" and quality == "V0":
            stream.codec_context.qscale = 1
        elif fmt in ("mp3", "ogg") and quality.endswith("k"):
            stream.bit_rate = int(quality[:-1]) * 1000
        frame = av.AudioFrame.from_ndarray(
            waveform.movedim(0, 1).reshape(1, -1).float().contiguous().numpy(), format="flt", layout=layout
        )
        frame.sample_rate = rate
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


def save_audio(
    node: str, audio: dict, prefix: str, fmt: str, quality: str, folder: io.FolderType, hidden
) -> list[ui.SavedResult]:
    wav, rate = check_audio(node, "audio", audio, max_channels=2)
    base = (
        folder_paths.get_output_directory()
        if folder == io.FolderType.output
        else folder_paths.get_temp_directory()
    )
    inside = "Use a name (or sub/folder/name) inside the output folder."
    target = os.path.abspath(os.path.join(base, prefix))
    if os.path.commonpath([os.path.abspath(base), target]) != os.path.abspath(base):
        raise node_error(
            node, "this prefix points outside ComfyUI's output folder", inside, "filename_prefix", prefix
        )
    with explained(node, "filename_prefix", prefix, inside):
        out_dir, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, base)
    metadata = file_metadata(hidden)
    results = []
    for batch, song in enumerate(wav.cpu()):
        file = f"{filename.replace('%batch_num%', str(batch))}_{counter:05}_.{fmt}"
        with explained(node, "format", fmt):
            data = encode_file(song, rate, fmt, quality, metadata)
        with open(os.path.join(out_dir, file), "wb") as f:
            f.write(data)
        results.append(ui.SavedResult(file, subfolder, folder))
        counter += 1
    return results


class AceStepSaveAudio(io.ComfyNode):
    TITLE = "ACE-Step Save Audio"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulSaveAudio",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Saves audio to ComfyUI's output folder as flac, wav, ogg or mp3, with the prompt, workflow "
            "and seeds in the file's metadata (wav: as JSON in its comment).",
            inputs=[
                io.Audio.Input("audio", tooltip="The audio to save (one file per batch item)."),
                io.String.Input(
                    "filename_prefix",
                    default="audio/ACE-Step",
                    tooltip="File name start, may include sub/folders of the output folder.",
                ),
                io.Combo.Input(
                    "format",
                    options=list(FORMATS),
                    default="flac",
                    tooltip="flac: lossless 16-bit. wav: 32-bit float, exact. ogg (Vorbis) and mp3: small, lossy.",
                ),
                advanced(
                    io.Combo.Input(
                        "quality", options=QUALITIES, default="320k", tooltip="Bit rate of ogg and mp3 files."
                    )
                ),
                _player(),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, audio: dict, filename_prefix: str, format: str = "flac", quality: str = "320k", **_):
        results = save_audio(
            cls.TITLE, audio, filename_prefix, format, quality, io.FolderType.output, cls.hidden
        )
        return io.NodeOutput(ui=ui.SavedAudios(results))


class AceStepPreviewAudio(io.ComfyNode):
    TITLE = "ACE-Step Preview Audio"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulPreviewAudio",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Plays audio in the browser (a temporary flac file, not kept in the output folder).",
            inputs=[io.Audio.Input("audio", tooltip="The audio to play."), _player()],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, audio: dict, **_) -> io.NodeOutput:
        prefix = "ACE-Step_preview_" + os.urandom(4).hex()
        results = save_audio(cls.TITLE, audio, prefix, "flac", "", io.FolderType.temp, cls.hidden)
        return io.NodeOutput(ui=ui.SavedAudios(results))


NODES = [AceStepLoadAudio, AceStepSaveAudio, AceStepPreviewAudio]
