"""The hint a failed phase's log line carries: which command will get the run going again.

`resume` runs the frozen spec again, so it helps after a fix in code (a phase's module, a
script) and after a passing cause (a full disk, a lost connection). A failure the spec caused
(a `with:` value a phase refuses, a missing model or few-shot file) comes back on every plain
`resume`: the spec itself must change, with `resume --spec`.
"""

from __future__ import annotations

import re
from pathlib import Path

from runner.errors import PhaseError

__all__ = ["failure_hint", "spec_caused"]

# What runner's own phases and the built-in ones say when their configuration is wrong.
_CONFIG_WORDS = re.compile(
    r"\bwith\.|\bmodel\b|\buses\b|few-shot|template|eval set|adapter|cannot import|"
    r"not callable|no module named|not an input of this phase|budget",
    re.IGNORECASE,
)


def spec_caused(exc: BaseException) -> bool:
    """Whether the failure comes from the spec's settings rather than from code at run time."""
    return isinstance(exc, PhaseError) and not _is_shell_exit(exc) and bool(_CONFIG_WORDS.search(str(exc)))


def _is_shell_exit(exc: BaseException) -> bool:
    return type(exc).__name__ == "ShellPhaseFailed"


def failure_hint(exc: BaseException, run_id: str, spec_file: Path, uses: str | None) -> str:
    """One sentence: what to fix and which `runner resume` then works."""
    amend = f"runner resume {run_id} --spec {spec_file}"
    if spec_caused(exc):
        return (f"the spec's settings caused this: fix {spec_file}, then `{amend}` (a plain "
                f"`runner resume {run_id}` reuses the frozen spec and fails the same way)")
    if _is_shell_exit(exc):
        return (f"fix the command or its script, then `runner resume {run_id}`; if the spec's "
                f"run:/env: is wrong, fix {spec_file} and `{amend}`")
    where = f"the phase's code ({uses})" if uses else "the cause"
    return (f"fix {where}, then `runner resume {run_id}` (it re-reads the code); to change the "
            f"spec instead: `{amend}`")
