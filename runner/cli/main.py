"""`runner`: the command line of the contract (../shared/CONTRACT.md).

Every command maps errors to exit codes in one place (`main`): a `RunnerError` prints its
message, one line per problem, and returns its exit code; nothing a user typed wrongly ends in
a traceback. Read-only commands (`status`, `gate`, `log`, `plan --run`, `verify`) and `decide` never take
the run's lock.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from runner.errors import EXIT_FAILED, EXIT_OK, RunnerError, UsageError

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse that raises `UsageError` (exit 2, one line) instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get("RUNNER_STATE_DIR") or "state")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = _Parser(add_help=False)
    # SUPPRESS: a subcommand's option must not reset one given before the subcommand.
    common.add_argument("--state-dir", default=argparse.SUPPRESS,
                        help="where runs live (default: $RUNNER_STATE_DIR, else ./state)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug log lines too")
    sets = _Parser(add_help=False)
    sets.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                      help="override a parameter (dotted path under params; VALUE is YAML)")

    parser = _Parser(prog="runner", description="Declarative, resumable, gated runs of staged GPU work.")
    parser.add_argument("--state-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", default=False, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("validate", parents=[common, sets], help="check a spec, reporting every problem")
    p.add_argument("spec")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("plan", parents=[common, sets], help="phases and gates with resolved parameters")
    p.add_argument("spec", nargs="?")
    p.add_argument("--run", dest="run_id", help="for an existing run: what resume would do")
    p.add_argument("--spec", dest="amend_spec", metavar="SPEC",
                   help="with --run: what `resume --spec SPEC` would re-run and keep")
    p = sub.add_parser("run", parents=[common, sets], help="start a new run")
    p.add_argument("spec")
    p.add_argument("--run-id")
    p.add_argument("--wait", action="store_true", help="stay at gates until a decision is recorded")
    p = sub.add_parser("resume", parents=[common, sets], help="continue a run from its last checkpoint")
    p.add_argument("run_id")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--spec", help="amend: put this spec in force, then continue")
    p = sub.add_parser("status", parents=[common], help="one run in detail, or every run")
    p.add_argument("run_id", nargs="?")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("gate", parents=[common], help="the review packet of the pending gate")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="also copy the packet (md, json, images) into this folder")
    p.add_argument("--html", nargs="?", const="", default=None, metavar="FILE",
                   help="write the packet as one self-contained HTML page (default: packet.html "
                        "in the gate's folder) and print its path")
    p = sub.add_parser("decide", parents=[common, sets], help="record a gate decision")
    p.add_argument("run_id")
    p.add_argument("--file", help="a YAML decision file instead of the options below")
    p.add_argument("--gate")
    p.add_argument("--decision", choices=["proceed", "iterate", "abort"])
    p.add_argument("--reviewer")
    p.add_argument("--reason")
    p.add_argument("--packet", help="the packet_sha256 that was reviewed")
    p.add_argument("--override-checks", action="store_true")
    p.add_argument("--sign-with", metavar="KEYFILE",
                   help="sign with this unencrypted OpenSSH ed25519 private key")
    p = sub.add_parser("verify", parents=[common], help="check the journal's chain and every decision's signature")
    p.add_argument("run_id")
    p.add_argument("--spec", help="a trusted copy of the spec: the run's reviewers must equal its reviewers")
    p = sub.add_parser("log", parents=[common], help="the run's transition journal, oldest first")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    return parser


_LOGGING_COMMANDS = frozenset({"run", "resume", "decide"})


def _dispatch(args: argparse.Namespace) -> int:
    # Imported here so `runner --help` and argument errors stay fast.
    from runner.cli import commands  # noqa: PLC0415

    state_dir = _state_dir(args)
    handler = getattr(commands, f"cmd_{args.command}")
    return handler(args, state_dir)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `runner` console script; returns the exit code."""
    # OpenMP threads that spin while waiting slow CPU torch many times over when another
    # process shares the cores; waiting passively changes no result. Before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        args = build_parser().parse_args(argv)
        if args.command in ("run", "resume"):
            from runner import environment  # noqa: PLC0415

            environment.check()  # a bad RUNNER_* value: one line, before anything is written
        if args.command in _LOGGING_COMMANDS:
            # structlog's console renderer imports rich (~0.15 s): only commands that log pay.
            from runner.console.logs import configure_logging  # noqa: PLC0415

            configure_logging(verbose=args.verbose)
        return _dispatch(args)
    except RunnerError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"error: {line}" if not _located(line) else line, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; `runner resume RUN_ID` continues the run", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        if "args" in locals() and getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"error: internal error ({type(exc).__name__}: {exc}); "
              "rerun with -v for the traceback and report it", file=sys.stderr)
        return EXIT_FAILED


def _located(line: str) -> bool:
    """A `FILE:LINE:COL: ...` problem line is printed as it is, without an `error:` prefix."""
    head = line.split(": ", 1)[0]
    parts = head.rsplit(":", 2)
    return len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit()

