"""The exception hierarchy of `runner`.

Every error a user can cause derives from `RunnerError` and carries the process exit code the
CLI returns for it, so the CLI maps errors to exit codes in one place and never prints a
traceback for a user mistake. Errors about the state machine carry the offending state and
event (as python-statemachine's do), so a log line or a test can name both.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "EXIT_ABORTED",
    "EXIT_AT_GATE",
    "EXIT_FAILED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_USAGE",
    "BudgetExceeded",
    "IllegalTransition",
    "JournalCorrupt",
    "LockHeld",
    "PhaseError",
    "Refused",
    "RunnerError",
    "SpecError",
    "SpecProblem",
    "UsageError",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AT_GATE = 3
EXIT_LOCKED = 4
EXIT_ABORTED = 5


class RunnerError(Exception):
    """Base of every error the CLI reports as one line with an exit code."""

    exit_code: int = EXIT_USAGE


class UsageError(RunnerError):
    """Bad command-line arguments, a missing run, an unreadable file: exit 2."""


class Refused(RunnerError):
    """A well-formed request the run's state does not allow (a decision on no pending gate)."""


@dataclass(frozen=True)
class SpecProblem:
    """One problem in a spec or decision file, located as FILE:LINE:COL plus a key path."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {where}{self.message}"


class SpecError(RunnerError):
    """All problems found in one spec (or decision file), reported together."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class IllegalTransition(RunnerError):
    """The state machine was asked for a transition its table does not list."""

    exit_code = EXIT_FAILED

    def __init__(self, state: str, event: str, detail: str = "") -> None:
        self.state = state
        self.event = event
        self.detail = detail
        msg = f"illegal transition: event '{event}' in state '{state}'"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class JournalCorrupt(RunnerError):
    """The run's journal is damaged before its last line; the run cannot safely go on."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(
            f"{path}:{line}: journal damaged ({reason}); the run cannot be resumed safely. "
            "Restore the run folder from a backup or start a new run."
        )


class LockHeld(RunnerError):
    """Another live process holds the run."""

    exit_code = EXIT_LOCKED

    def __init__(self, run_id: str, pid: int, host: str, started: str) -> None:
        self.run_id = run_id
        self.pid = pid
        self.host = host
        super().__init__(
            f"run '{run_id}' is held by pid {pid} on {host} (since {started}); "
            "wait for it to finish or stop that process"
        )


class PhaseError(RunnerError):
    """A phase raised or exited non-zero; the run is left `failed` and resumable."""

    exit_code = EXIT_FAILED

    def __init__(self, phase: str, message: str) -> None:
        self.phase = phase
        super().__init__(f"phase '{phase}' failed: {message}")


class BudgetExceeded(RunnerError):
    """`budget.max_usd` is spent; no further phase starts."""

    exit_code = EXIT_FAILED
