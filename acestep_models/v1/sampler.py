"""The diffusion loops of ACE-Step v1: text2music (with retake, repaint, extend, audio2audio) and flow-edit, as the
official ``ACEStepPipeline.text2music_diffusion_process`` / ``flowedit_diffusion_process`` compute them.

Where the official code runs the DiT several times per step (conditional, unconditional, text-only; flow-edit's
source and target branches and its ``n_avg`` draws), the passes here go through ONE batched ``decode`` per step
(``batch_passes=False`` runs them one by one, as official: same result to rounding, less memory). The prompt and
lyric encoding (the DiT's ``encode``) runs once per generation, not per step. A pass whose result the official
code throws away is not run: CFG-zero*'s first steps (a zero velocity) and flow-edit's PingPong edit phase (whose
updates are discarded; its random draws still happen, so the random streams stay the official ones).

ERG (the official "energy-based" weak conditioning) scales attention queries by 0.01 with forward hooks, as
official: on the lyric encoder's blocks 4-5 when building the unconditional (and text-only) lyric encoding
(``use_erg_lyric``), and on the DiT blocks 15-19 (self- and cross-attention) for the unconditional rows
(``use_erg_diffusion``). Hooks live only inside context managers, so an error never leaves one behind.

Noise: one ``torch.Generator`` per batch item, drawn as diffusers' ``randn_tensor`` (``batch_noise``); the retake
generators draw the second noise of retake/repaint/extend, and all of flow-edit's; PingPong's fresh noise per
step comes from the first generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..common import guidance as G
from ..common import tasks
from ..common.noise import batch_noise
from ..common.progress import Interrupt, Progress, check_interrupt
from ..common.sampling import run_steps
from .conditioning import Conditioning
from .music_dcae import LATENT_SHAPE, frames_for_seconds
from .schedulers import SCHEDULERS, Schedule, Stepper, first_step_index, make_schedule, oss_schedule

ERG_TAU = 0.01  # official forward_{encoder,diffusion}_with_temperature(tau=0.01)
ERG_LYRIC_LAYERS = range(4, 6)  # official forward_encoder_with_temperature(l_min=4, l_max=6)
ERG_DIT_BLOCKS = range(15, 20)  # official forward_diffusion_with_temperature(l_min=15, l_max=20)
WINDOW_SECONDS = 240.0  # official max_infer_fame_length: the longest song, and extend's window
MAX_FRAMES = frames_for_seconds(WINDOW_SECONDS)  # at most 2583 frames are sampled

# --- settings -----------------------------------------------------------------------------------------------------


@dataclass
class SamplerSettings:
    """The official ``__call__`` sampling knobs (same names, same defaults)."""

    infer_step: int = 60
    guidance_scale: float = 15.0
    scheduler_type: str = "euler"
    cfg_type: str = "apg"
    omega_scale: float = 10.0
    guidance_interval: float = 0.5
    guidance_interval_decay: float = 0.0
    min_guidance_scale: float = 3.0
    use_erg_lyric: bool = True
    use_erg_diffusion: bool = True
    oss_steps: Sequence[int] = field(default_factory=list)
    guidance_scale_text: float = 0.0
    guidance_scale_lyric: float = 0.0

    def check(self) -> None:
        if self.scheduler_type not in SCHEDULERS:
            raise ValueError(f"scheduler_type must be one of {SCHEDULERS}, not {self.scheduler_type!r}")
        if self.cfg_type not in G.CFG_TYPES:
            raise ValueError(f"cfg_type must be one of {G.CFG_TYPES}, not {self.cfg_type!r}")
        if self.oss_steps and min(self.oss_steps) < 0:
            raise ValueError(
                f"oss_steps must be step numbers from 1 to their maximum, not {list(self.oss_steps)}"
            )


def schedule_for(settings: SamplerSettings, device=None, dtype: torch.dtype = torch.float32) -> Schedule:
    """The text2music schedule (``oss_steps``, when given, replace ``infer_step``)."""
    if settings.oss_steps:
        return oss_schedule(settings.scheduler_type, settings.oss_steps, dtype=dtype, device=device)
    return make_schedule(settings.scheduler_type, settings.infer_step, device=device)


# --- ERG hooks ----------------------------------------------------------------------------------------------------


@contextmanager
def scaled_outputs(
    modules: Sequence[nn.Module], tau: float, rows: Sequence[slice] | None = None
) -> Iterator[None]:
    """Within the block, the outputs of ``modules`` (Linear layers feeding attention queries) are multiplied by
    ``tau`` in place, for the batch ``rows`` only (all rows when None); the hooks are always removed."""

    def hook(module, args, output):
        if rows is None:
            output.mul_(tau)
        else:
            for r in rows:
                output[r].mul_(tau)

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def lyric_temperature(dit: nn.Module, tau: float = ERG_TAU, layers: Sequence[int] = ERG_LYRIC_LAYERS):
    """ERG on the lyric encoder: queries of its blocks ``layers`` scaled by ``tau`` (official
    ``forward_encoder_with_temperature``)."""
    return scaled_outputs([dit.lyric_encoder.encoders[i].self_attn.linear_q for i in layers], tau)


def diffusion_temperature(
    dit: nn.Module,
    rows: Sequence[slice] | None = None,
    tau: float = ERG_TAU,
    blocks: Sequence[int] = ERG_DIT_BLOCKS,
):
    """ERG on the DiT: self- and cross-attention queries of ``blocks`` scaled by ``tau`` for the batch ``rows``
    (official ``forward_diffusion_with_temperature``, which runs on the unconditional pass only)."""
    modules = []
    for i in blocks:
        modules += [dit.transformer_blocks[i].attn.to_q, dit.transformer_blocks[i].cross_attn.to_q]
    return scaled_outputs(modules, tau, rows)


# --- DiT passes ---------------------------------------------------------------------------------------------------


@dataclass
class Branch:
    """One conditioning the DiT is run with: encoded states [B, L, C] and their mask [B, L]."""

    states: torch.Tensor
    mask: torch.Tensor
    erg: bool = False  # run with the diffusion ERG hooks


def _pad_context(branch: Branch, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """States and mask padded at the end to ``length`` tokens (masked out; the real tokens keep their positions,
    so their RoPE phases, and the attention result up to rounding)."""
    extra = length - branch.states.shape[1]
    if extra == 0:
        return branch.states, branch.mask
    return F.pad(branch.states, (0, 0, 0, extra)), F.pad(branch.mask, (0, extra))


def run_dit(
    dit: nn.Module,
    inputs: Sequence[torch.Tensor],
    branches: Sequence[Branch],
    t: torch.Tensor,
    batch_passes: bool = True,
) -> list[torch.Tensor]:
    """Velocities of ``inputs[j]`` [B, 8, 16, T] under ``branches[j]`` at timestep ``t`` (0-dim, 0..1000): all in
    one batched ``decode`` (``batch_passes``), or one ``decode`` per branch as the official code does."""
    if not batch_passes or len(branches) == 1:
        out = []
        for x, b in zip(inputs, branches):
            with diffusion_temperature(dit) if b.erg else nullcontext():
                frame_mask = torch.ones(x.shape[0], x.shape[-1], device=x.device, dtype=x.dtype)
                v = dit.decode(x, frame_mask, b.states, b.mask, t.expand(x.shape[0]))
            out.append(
                v.contiguous()
            )  # the official layout: reductions over it (omega mean, APG norms) sum alike
        return out
    length = max(b.states.shape[1] for b in branches)
    padded = [_pad_context(b, length) for b in branches]
    x = torch.cat(list(inputs))
    sizes = [len(i) for i in inputs]
    starts = [sum(sizes[:j]) for j in range(len(sizes))]
    erg_rows = [slice(s, s + n) for s, n, b in zip(starts, sizes, branches) if b.erg]
    frame_mask = torch.ones(x.shape[0], x.shape[-1], device=x.device, dtype=x.dtype)
    with diffusion_temperature(dit, erg_rows) if erg_rows else nullcontext():
        v = dit.decode(
            x,
            frame_mask,
            torch.cat([p[0] for p in padded]),
            torch.cat([p[1] for p in padded]),
            t.expand(len(x)),
        )
    return list(v.contiguous().split(sizes))


def _repeat(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.repeat(n, *([1] * (x.dim() - 1)))


@torch.no_grad()
def encode_branches(
    dit: nn.Module, cond: Conditioning, batch: int, settings: SamplerSettings
) -> dict[str, Branch]:
    """The official text2music encodings, repeated over the batch: ``cond`` P(speaker, text, lyric); ``uncond``
    P(no speaker, ERG text, ERG lyric) or P(no speaker, no text, no lyric); with double-condition guidance
    ``text_only`` P(no speaker, text, ERG lyric or no lyric). All share the conditional mask, as official."""
    text, text_mask = _repeat(cond.text, batch), _repeat(cond.text_mask, batch)
    speaker, ids, lyric_mask = (
        _repeat(cond.speaker, batch),
        _repeat(cond.lyric_ids, batch),
        _repeat(cond.lyric_mask, batch),
    )
    no_speaker = torch.zeros_like(speaker)
    states, mask = dit.encode(text, text_mask, speaker, ids, lyric_mask)
    branches = {"cond": Branch(states, mask)}
    if not G.uses_cfg(settings.guidance_scale):
        return branches
    erg = settings.use_erg_diffusion
    if settings.use_erg_lyric:
        null_text = _repeat(cond.text_null, batch) if cond.text_null is not None else torch.zeros_like(text)
        with lyric_temperature(dit):
            null = dit.encode(null_text, text_mask, no_speaker, ids, lyric_mask)[0]
    else:
        null = dit.encode(torch.zeros_like(text), text_mask, no_speaker, torch.zeros_like(ids), lyric_mask)[0]
    if G.uses_double_condition(settings.guidance_scale_text, settings.guidance_scale_lyric):
        if settings.use_erg_lyric:
            with lyric_temperature(dit):
                text_only = dit.encode(text, text_mask, no_speaker, ids, lyric_mask)[0]
        else:
            text_only = dit.encode(text, text_mask, no_speaker, torch.zeros_like(ids), lyric_mask)[0]
        branches["text_only"] = Branch(text_only, mask)
    branches["uncond"] = Branch(null, mask, erg=erg)
    return branches


# --- repaint / extend ---------------------------------------------------------------------------------------------


def _blend(mask: torch.Tensor, inside: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """``inside`` where mask is 1, ``outside`` where it is 0 (exactly, as the official ``where``), a per-frame
    linear blend in between."""
    mixed = torch.where(mask == 0, outside, mask * inside + (1 - mask) * outside)
    return torch.where(mask == 1, inside, mixed).to(inside.dtype)


def _latent_mask(mask: torch.Tensor, batch: int, frames: int, device) -> torch.Tensor:
    """A user mask [T] or [B, T] in [0, 1] -> [B, 8, 16, T] float32 (full size and contiguous like the official
    mask: the layout of what is computed from it, hence the DiT's input and its rounding, follows the mask)."""
    mask = torch.as_tensor(mask, dtype=torch.float32, device=device)
    if mask.dim() == 1:
        mask = mask[None]
    if mask.dim() != 2 or mask.shape[-1] != frames or mask.shape[0] not in (1, batch):
        raise ValueError(
            f"repaint_mask must be [T] or [B, T] with T = {frames} latent frames and B = {batch}, "
            f"got {tuple(mask.shape)}"
        )
    if ((mask < 0) | (mask > 1)).any():
        raise ValueError("repaint_mask values must lie in [0, 1]")
    return mask[:, None, None, :].expand(batch, *LATENT_SHAPE, frames).contiguous()


@dataclass
class _Repaint:
    """The state of a repaint/extend run: source latents ``x0``, the noise ``z0`` they are blended with, where to
    regenerate, from which step, and the official 240 s window's leftovers to put back."""

    x0: torch.Tensor
    z0: torch.Tensor
    mask: torch.Tensor  # [B, 8, 16, T], 1 = regenerate
    n_min: int
    append: torch.Tensor | None = None  # frames to put after the result (official left-extend window)
    prepend: torch.Tensor | None = None  # frames to put before the result (right-extend window)


def official_range_task(
    start: int,
    end: int,
    frames: int,
    variance: float,
    source: torch.Tensor | None,
    mask: torch.Tensor | None = None,
    batch: int = 1,
) -> tasks.Retake | tasks.Repaint | tasks.Extend:
    """The official repaint range ``[start, end)`` in latent frames of a song of ``frames`` frames as a task:
    start < 0 or end > frames extends, the whole song is a retake, anything else a repaint. ``mask``: an optional
    [T] / [B, T] latent mask replacing the range (for extend: over the extended frames).

    Official quirks kept: an extend ignores a start >= 0, and its right pad counts from the left-padded source cut
    to the 240 s window (so when both sides grow, an end inside that window adds nothing on the right)."""
    if start < 0 or end > frames:
        left = -start if start < 0 else 0
        after_left = min(frames + left, MAX_FRAMES) if left > 0 else frames
        right = max(0, end - after_left) if end > frames else 0
        if source is None:
            raise ValueError("repaint and extend need source latents (src_audio)")
        return tasks.Extend(source, left, right, variance, mask)
    if mask is not None:
        if bool(
            (_latent_mask(mask, batch, frames, "cpu") == 1).all()
        ):  # the whole song: official range [0, T]
            return tasks.Retake(variance)
    elif end - start == frames:  # a retake: the noise only is varied
        return tasks.Retake(variance)
    if source is None:
        raise ValueError("repaint and extend need source latents (src_audio)")
    return tasks.Repaint(source, tasks.range_mask(frames, [(start, end)]) if mask is None else mask, variance)


def _retake_plan(
    target: torch.Tensor,
    generators: Sequence[torch.Generator],
    task: tasks.Retake | tasks.Repaint | tasks.Extend,
    n_min: int,
) -> tuple[torch.Tensor, _Repaint | None]:
    """The official ``add_retake_noise`` block. Returns the start latents and, for repaint/extend, the plan."""
    B, frames, device, dtype = target.shape[0], target.shape[-1], target.device, target.dtype
    angle = torch.tensor(task.variance * math.pi / 2).to(device).to(dtype)
    left, right = (task.left, task.right) if isinstance(task, tasks.Extend) else (0, 0)
    # Official: retake noise as long as the source; extending by more than that fails there (an assert), so only
    # then is it drawn longer here.
    retake = batch_noise((B, *LATENT_SHAPE, max(frames, left, right)), generators, device, dtype)
    if isinstance(task, tasks.Retake):
        return torch.cos(angle) * target + torch.sin(angle) * retake, None
    if isinstance(task, tasks.Repaint):
        user = _latent_mask(task.mask, B, frames, device)
        if bool((user == 1).all()):  # the whole song: the official range [0, T] case
            return torch.cos(angle) * target + torch.sin(angle) * retake, None
        blended = torch.cos(angle) * target + torch.sin(angle) * retake
        z0 = torch.where(user > 0, blended, target)
        return target, _Repaint(task.source, z0, user, n_min)
    # extend: zero-pad the source, regenerate the padding; at most MAX_FRAMES are sampled (official window)
    gt, append, prepend, left_trim, right_trim = task.source, None, None, 0, 0
    if left > 0:
        gt = F.pad(gt, (left, 0))
        if gt.shape[-1] > MAX_FRAMES:
            right_trim = gt.shape[-1] - MAX_FRAMES
            gt = gt[..., :MAX_FRAMES]
            append = gt[..., -right_trim:]  # official: taken from the kept window, not the frames cut off
    if right > 0:
        padded = F.pad(gt, (0, right))
        if padded.shape[-1] > MAX_FRAMES:
            # official: fails here (a None in torch.cat); the frames cut off on the left are put back instead
            left_trim = padded.shape[-1] - MAX_FRAMES
            prepend = padded[..., :left_trim]
            padded = padded[..., -MAX_FRAMES:]
        gt = padded
    length = gt.shape[-1]
    if task.mask is not None:
        user = _latent_mask(task.mask, B, length, device)
    else:
        user = torch.zeros(B, *LATENT_SHAPE, length, device=device, dtype=dtype)
        if left > 0:
            user[..., :left] = 1.0
        if right > 0:
            user[..., -right:] = 1.0
    parts = [retake[..., :left]] if left > 0 else []
    parts.append(target[..., left_trim : frames - right_trim])
    if right > 0:
        parts.append(retake[..., -right:])
    return target, _Repaint(gt, torch.cat(parts, dim=-1), user, n_min, append, prepend)


# --- text2music ---------------------------------------------------------------------------------------------------


class GuidedVelocity:
    """The official guidance of one run (``text2music_diffusion_process``): ``self(i, t, x)`` is the guided velocity
    at step ``i`` (the index the guidance interval, decay and CFG-zero* count), timestep ``t`` and latents ``x``,
    from the conditional / unconditional (/ text-only) ``branches``; APG's momentum lives across calls."""

    def __init__(
        self, dit: nn.Module, branches: dict, settings: SamplerSettings, steps: int, batch_passes: bool = True
    ):
        self.dit, self.branches, self.settings, self.batch_passes = dit, branches, settings, batch_passes
        self.use_cfg = G.uses_cfg(settings.guidance_scale)
        self.double = "text_only" in branches
        self.start, self.end = G.guidance_interval(steps, settings.guidance_interval)
        self.momentum = G.MomentumBuffer()

    def __call__(self, i: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        settings, branches = self.settings, self.branches
        if not (self.use_cfg and self.start <= i < self.end):
            return run_dit(self.dit, [x], [branches["cond"]], t, self.batch_passes)[0]
        if not self.double and settings.cfg_type == "cfg_star" and G.cfg_zero_star_is_zero(i):
            return torch.zeros_like(x)  # official cond * 0.0: the passes are not needed
        names = ["cond", "text_only", "uncond"] if self.double else ["cond", "uncond"]
        v = dict(
            zip(
                names, run_dit(self.dit, [x] * len(names), [branches[n] for n in names], t, self.batch_passes)
            )
        )
        if self.double:
            return G.double_condition(
                v["cond"],
                v["uncond"],
                v["text_only"],
                settings.guidance_scale_text,
                settings.guidance_scale_lyric,
            )
        scale = G.scale_at(
            i,
            self.start,
            self.end,
            settings.guidance_scale,
            settings.guidance_interval_decay,
            settings.min_guidance_scale,
        )
        if settings.cfg_type == "apg":
            return G.apg(v["cond"], v["uncond"], scale, self.momentum)
        if settings.cfg_type == "cfg":
            return G.cfg(v["cond"], v["uncond"], scale)
        return G.cfg_zero_star(v["cond"], v["uncond"], scale, i)


def _repaint_step(plan: _Repaint, timesteps: torch.Tensor, dtype: torch.dtype):
    """Repaint's step: plain Euler, then the source's noised trajectory put back outside the mask (official)."""

    def step(i: int, t: torch.Tensor, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t_i = t / 1000
        t_next = timesteps[i + 1] / 1000 if i + 1 < len(timesteps) else torch.zeros_like(t_i)
        x = (x.to(torch.float32) + (t_next - t_i) * v).to(dtype)
        return _blend(plan.mask, x, (1 - t_next) * plan.x0 + t_next * plan.z0)

    return step


@torch.no_grad()
def text2music(
    dit: nn.Module,
    cond: Conditioning,
    settings: SamplerSettings,
    generators: Sequence[torch.Generator],
    *,
    frames: int,
    task: tasks.Text2Music
    | tasks.Retake
    | tasks.Repaint
    | tasks.Extend
    | tasks.Audio2Audio = tasks.TEXT2MUSIC,
    retake_generators: Sequence[torch.Generator] | None = None,
    progress: Progress | None = None,
    interrupt: Interrupt | None = None,
    batch_passes: bool = True,
) -> torch.Tensor:
    """The official ``text2music_diffusion_process``: latents [B, 8, 16, T] for B = len(generators).

    ``cond`` must already be on the DiT's device and in the sampling dtype, as the task's latents. ``frames``: the
    length from the duration (a source or reference replaces it). ``retake_generators`` draw the second noise of
    retake, repaint and extend (default: ``generators``)."""
    settings.check()
    device, dtype = cond.text.device, cond.text.dtype
    B = len(generators)
    schedule = schedule_for(settings, device, dtype)
    infer_steps = max(settings.oss_steps) if settings.oss_steps else settings.infer_step
    if isinstance(task, (tasks.Repaint, tasks.Extend)):
        frames = task.source.shape[-1]
    if isinstance(task, tasks.Audio2Audio):
        frames = task.reference.shape[-1]
    target = batch_noise((B, *LATENT_SHAPE, frames), generators, device, dtype)

    plan = None
    if isinstance(task, (tasks.Retake, tasks.Repaint, tasks.Extend)):
        n_min = int(infer_steps * (1 - task.variance))
        target, plan = _retake_plan(target, retake_generators or generators, task, n_min)
    if isinstance(task, tasks.Audio2Audio):  # start part-way, from the noised reference (add_latents_noise)
        sigma_max = 1 - task.strength
        schedule = make_schedule(settings.scheduler_type, int(sigma_max * infer_steps), sigma_max, device)
        target = task.reference * (1 - schedule.sigma_max) + target * schedule.sigma_max

    branches = encode_branches(dit, cond, B, settings)
    guided = GuidedVelocity(dit, branches, settings, schedule.num_inference_steps, batch_passes)
    timesteps = schedule.timesteps
    if plan is None:
        stepper = Stepper(schedule, settings.omega_scale)
        step = lambda i, t, v, x: stepper.step(v, t, x, generators[0])  # noqa: E731
        first = 0
    else:  # official: repaint skips the steps before n_min and starts from the source noised to that step
        step, first = _repaint_step(plan, timesteps, dtype), plan.n_min
        if 0 <= first < len(timesteps):
            t_first = timesteps[first] / 1000
            noised_src = (1 - t_first) * plan.x0 + t_first * plan.z0
            target = plan.x0.clone() + noised_src - plan.x0  # official zt_edit + zt_src - x0
    target = run_steps(timesteps, guided, step, target, start=first, progress=progress, interrupt=interrupt)

    if plan is not None:
        if plan.append is not None:
            target = torch.cat([target, plan.append.expand(len(target), -1, -1, -1)], dim=-1)
        if plan.prepend is not None:
            target = torch.cat([plan.prepend.expand(len(target), -1, -1, -1), target], dim=-1)
    return target


def sample(
    dit: nn.Module,
    cond: Conditioning,
    settings: SamplerSettings,
    generators: Sequence[torch.Generator],
    task: tasks.Task = tasks.TEXT2MUSIC,
    *,
    frames: int,
    retake_generators: Sequence[torch.Generator] | None = None,
    progress: Progress | None = None,
    interrupt: Interrupt | None = None,
    batch_passes: bool = True,
) -> torch.Tensor:
    """One official v1 task: flow-edit for ``tasks.Edit`` (its noise from ``retake_generators``, as official, or
    ``generators``), the text2music loop for every other task."""
    if isinstance(task, tasks.Edit):
        return flow_edit(
            dit,
            cond,
            task.target,
            task.source,
            retake_generators or generators,
            infer_steps=settings.infer_step,
            guidance_scale=settings.guidance_scale,
            n_min=task.n_min,
            n_max=task.n_max,
            n_avg=task.n_avg,
            scheduler_type=settings.scheduler_type,
            progress=progress,
            interrupt=interrupt,
            batch_passes=batch_passes,
        )
    return text2music(
        dit,
        cond,
        settings,
        generators,
        frames=frames,
        task=task,
        retake_generators=retake_generators,
        progress=progress,
        interrupt=interrupt,
        batch_passes=batch_passes,
    )


# --- flow-edit ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def edit_branches(dit: nn.Module, cond: Conditioning, batch: int, use_cfg: bool) -> list[Branch]:
    """Flow-edit's conditions: the conditional one and, with guidance, the null one (no text, no speaker, no
    lyric, and the lyric mask zeroed too). Encoded together, as the official ``calc_v``'s DiT forward does."""
    parts = [cond.text, cond.text_mask, cond.speaker, cond.lyric_ids, cond.lyric_mask]
    if use_cfg:  # official: [cond; null] along the batch
        parts = [torch.cat([x, x if i == 1 else torch.zeros_like(x)]) for i, x in enumerate(parts)]
    states, mask = dit.encode(*(x.repeat_interleave(batch, dim=0) for x in parts))
    return [Branch(s, m) for s, m in zip(states.split(batch), mask.split(batch))]


@torch.no_grad()
def flow_edit(
    dit: nn.Module,
    src_cond: Conditioning,
    tar_cond: Conditioning,
    src_latents: torch.Tensor,
    generators: Sequence[torch.Generator],
    *,
    infer_steps: int = 60,
    guidance_scale: float = 15.0,
    n_min: float = 0.0,
    n_max: float = 1.0,
    n_avg: int = 1,
    scheduler_type: str = "euler",
    progress: Progress | None = None,
    interrupt: Interrupt | None = None,
    batch_passes: bool = True,
) -> torch.Tensor:
    """The official ``flowedit_diffusion_process``: edit ``src_latents`` [1, 8, 16, T] from the source prompt and
    lyrics towards the target ones. Euler timesteps and APG always; the guidance interval does not apply.

    Steps before ``n_min * steps`` are skipped; up to ``n_max * steps`` the edit moves by the average over
    ``n_avg`` noise draws of (target velocity - source velocity); after that the target is sampled normally from
    the edited latents. Official quirks kept: the target branch gets no APG momentum during the edit phase, and
    with ``scheduler_type="pingpong"`` the edit phase never changes the latents (the later phase re-noises
    instead of stepping). ``generators``: the official pipeline passes the retake generators here.

    With more than one generator the source is repeated per batch item (the official code fails there)."""
    device, dtype = src_cond.text.device, src_cond.text.dtype
    B = len(generators)
    use_cfg = G.uses_cfg(guidance_scale)
    schedule = make_schedule("euler", infer_steps, device=device)
    timesteps, sigmas = schedule.timesteps, schedule.sigmas
    src_b, tar_b = edit_branches(dit, src_cond, B, use_cfg), edit_branches(dit, tar_cond, B, use_cfg)
    momentum, momentum_tar = G.MomentumBuffer(), G.MomentumBuffer()
    pingpong = scheduler_type == "pingpong"

    def guided(v: list[torch.Tensor], buffer: G.MomentumBuffer | None) -> torch.Tensor:
        return G.apg(v[0], v[1], guidance_scale, buffer) if use_cfg else v[0]

    x_src = src_latents if B == 1 else _repeat(src_latents, B)
    zt_edit, xt_tar = x_src.clone(), None
    n_min, n_max = int(infer_steps * n_min), int(infer_steps * n_max)
    k_src, k_tar = len(src_b), len(tar_b)
    total, done = max(0, len(timesteps) - n_min), 0
    for i, t in enumerate(timesteps):
        if i < n_min:
            continue
        check_interrupt(interrupt)
        t_i = t / 1000
        t_next = timesteps[i + 1] / 1000 if i + 1 < len(timesteps) else torch.zeros_like(t_i).to(device)
        if i < n_max:
            noises = [batch_noise(x_src.shape, generators, device, dtype) for _ in range(n_avg)]
            if not pingpong:
                inputs, branches = [], []
                for noise in noises:
                    zt_src = (1 - t_i) * x_src + t_i * noise
                    zt_tar = zt_edit + zt_src - x_src
                    inputs += [zt_src] * k_src + [zt_tar] * k_tar
                    branches += src_b + tar_b
                if batch_passes:
                    v = run_dit(dit, inputs, branches, t)
                else:  # as official: one forward per source / target, conditional and null together
                    n = k_src + k_tar
                    v = [
                        out
                        for j in range(0, len(inputs), n)
                        for group in ((j, j + k_src), (j + k_src, j + n))
                        for out in run_dit(dit, inputs[slice(*group)], branches[slice(*group)], t)
                    ]
                delta = torch.zeros_like(x_src)
                for k in range(n_avg):
                    vk = v[k * (k_src + k_tar) : (k + 1) * (k_src + k_tar)]
                    v_src, v_tar = guided(vk[:k_src], momentum), guided(vk[k_src:], None)
                    delta += (1 / n_avg) * (v_tar - v_src)
                zt_edit = zt_edit.to(torch.float32)
                zt_edit = (zt_edit + (t_next - t_i) * delta).to(dtype)
            else:  # official: the PingPong edit update is computed and dropped; only its noise draw remains
                zt_edit = zt_edit.to(torch.float32)
                torch.empty_like(zt_edit).normal_(generator=generators[0])
        else:
            if xt_tar is None:  # official: at i == n_max
                noise = batch_noise(x_src.shape, generators, device, dtype)
                sigma = sigmas[first_step_index(timesteps, t)]
                xt_tar = zt_edit + (sigma * noise + (1.0 - sigma) * x_src) - x_src
            # (the official PingPong branch leaves xt_tar in float32, which a half-precision DiT would reject)
            v_tar = guided(run_dit(dit, [xt_tar.to(dtype)] * k_tar, tar_b, t), momentum_tar)
            xt_tar = xt_tar.to(torch.float32)
            if not pingpong:
                xt_tar = (xt_tar + (t_next - t_i) * v_tar).to(dtype)
            else:
                denoised = xt_tar - t_i * v_tar
                noise = torch.empty_like(zt_edit).normal_(generator=generators[0])
                xt_tar = (1 - t_next) * denoised + t_next * noise
        done += 1
        if progress is not None:
            progress(done, total)
    return zt_edit if xt_tar is None else xt_tar
