"""The environment variables that tune built-in phases, checked before a run touches disk.

They are read deep inside phases (generation, critic), where a misspelt value would fail a
phase after the run folder exists. `check()` runs first in `runner run` and `runner resume`
and turns a bad value into one usage line (exit 2). No torch import: the CLI stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from runner.errors import UsageError

__all__ = ["CHOICES", "COMPILE_MODES", "ENGINES", "check"]

ENGINES = ("auto", "simple", "static")
COMPILE_MODES = ("auto", "always", "never")
CHOICES: dict[str, tuple[str, ...]] = {
    "RUNNER_GENERATION": ENGINES,  # llm/generation.engine_for
    "RUNNER_DECODE_COMPILE": COMPILE_MODES,  # llm/fastgen: compiled parts in the step graphs
    "RUNNER_CRITIC_COMPILE": COMPILE_MODES,  # llm/critic_forward: compiled decoder layers
    "RUNNER_CONSOLE": ("auto", "live", "lines"),  # console/view: live view or one line per phase
}


def check(env: Mapping[str, str] | None = None) -> None:
    """`UsageError` naming the first variable whose value is not one of its choices."""
    env = os.environ if env is None else env
    for name, allowed in CHOICES.items():
        value = (env.get(name) or "auto").strip().lower()
        if value not in allowed:
            raise UsageError(f"environment variable {name}={env[name]!r} is not one of "
                             f"{', '.join(allowed)}; set one of those or unset it")
