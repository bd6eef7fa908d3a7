"""How a long run reports progress and is stopped: ``progress(done, total)`` after each step, ``interrupt()``
asked before each one (the CLI's Ctrl-C, ComfyUI's Cancel)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]
Interrupt = Callable[[], bool]


class Interrupted(Exception):
    """Raised between steps when the caller's ``interrupt()`` returns True."""


def check_interrupt(interrupt: Interrupt | None) -> None:
    if interrupt is not None and interrupt():
        raise Interrupted("generation interrupted")
