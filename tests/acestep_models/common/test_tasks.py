"""The task objects and masks the command line and the nodes build (``acestep_models.common.tasks``)."""

from __future__ import annotations

import torch

from acestep_models.common import tasks


def song(frames: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 8, 16, frames, generator=torch.Generator().manual_seed(0))


def test_range_mask_marks_the_frames_with_soft_edges():
    assert torch.equal(tasks.range_mask(6, [(1, 3)]), torch.tensor([0.0, 1, 1, 0, 0, 0]))
    soft = tasks.range_mask(8, [(3, 5)], soft_frames=2)
    assert soft.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0]
    assert tasks.range_mask(4, [(3, 1)]).sum() == 0  # an empty range marks nothing


def test_a_mask_reads_as_retake_repaint_or_extend():
    x = song(10)
    assert tasks.from_mask(x, torch.ones(10), 0.3) == tasks.Retake(0.3)
    repaint = tasks.from_mask(x, tasks.range_mask(10, [(2, 5)]), 0.3)
    assert isinstance(repaint, tasks.Repaint) and repaint.source is x
    padded = torch.nn.functional.pad(x, (2, 3))
    extend = tasks.from_mask(padded, tasks.range_mask(15, [(0, 2), (12, 15)]), 1.0)
    assert isinstance(extend, tasks.Extend) and (extend.left, extend.right) == (2, 3)
    assert torch.equal(extend.source, x)
    # song material under the mask, or soft edges: a repaint over the whole latent, not an extend
    assert isinstance(tasks.from_mask(x, tasks.range_mask(10, [(0, 2)]), 0.3), tasks.Repaint)
    assert isinstance(
        tasks.from_mask(padded, tasks.range_mask(15, [(0, 2)], soft_frames=2), 0.3), tasks.Repaint
    )
    # a batch whose rows mark different frames is a repaint per row
    rows = torch.stack([tasks.range_mask(15, [(0, 2)]), tasks.range_mask(15, [(12, 15)])])
    assert isinstance(tasks.from_mask(padded.expand(2, -1, -1, -1), rows, 0.3), tasks.Repaint)


def test_to_moves_latents_and_keeps_mask_values():
    mask = torch.tensor([0.0, 0.25, 1.0])
    task = tasks.to(tasks.Repaint(song(3), mask, 0.5), "cpu", torch.bfloat16)
    assert task.source.dtype == torch.bfloat16 and torch.equal(task.mask, mask)
    assert tasks.to(tasks.TEXT2MUSIC, "cpu", torch.bfloat16) is tasks.TEXT2MUSIC
