"""What a person reads about a phase or a gate: the few metrics that matter, checks, commands.

Pure functions of plain data (metric dicts, check dicts, names), shared by the live view, the
line view and `runner status`, so every place shows a phase's outcome the same way. Nothing
here prints or reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "MAX_LINE",
    "check_rows",
    "clip",
    "format_duration",
    "format_value",
    "key_metrics",
    "next_commands",
]

MAX_LINE = 160  # a line-mode console line never gets longer than this

# Per built-in phase kind, the metrics a person wants first, in order. A tuple names a ratio
# shown as `a/b` under the first name's label. Keys absent from a phase's metrics are skipped.
_KEYS: dict[str, tuple[Any, ...]] = {
    "generate_instructions": (("kept", "count", "generated"), "tokens", "runaway_rate"),
    "generate_responses": (("kept", "count", "generated"), "tokens", "runaway_rate"),
    "critic_filter": ("acceptance", "label_bias", "probe_auc"),
    "qc": ("runaway_rate", "median_response_tokens", "median_tokens", "pair_acceptance"),
    "sft": ("steps", "final_loss", "loss"),
    "evaluate": ("base_pass_rate", "sft_pass_rate", "improvement"),
    "merge": ("merged", "pair_acceptance", "runaway_rate"),
}
_MAX_SHOWN = 3


def format_value(value: Any) -> str:
    """A metric value as a person reads it: integers plain, other numbers to 4 significant digits."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return "missing" if value is None else str(value)


def format_duration(seconds: float | None) -> str:
    """`0.4s`, `12.3s`, `4m05s`, `2h03m`."""
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _derived(kind: str | None, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
    """A sharded critic sums its shards' counts but cannot sum a rate: derive it back."""
    if kind == "critic_filter" and "acceptance" not in metrics:
        accepted, scored = metrics.get("accepted"), metrics.get("scored")
        if _numeric(accepted) and _numeric(scored) and scored:
            return {**metrics, "acceptance": accepted / scored}
    return metrics


def key_metrics(kind: str | None, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The two or three (label, text) pairs worth a line for a phase of `kind` (its `uses`).

    A known built-in kind shows its chosen metrics; anything else its first two numbers.
    """
    metrics = _derived(kind, metrics)
    shown: list[tuple[str, str]] = []
    for key in _KEYS.get(kind or "", ()):
        if isinstance(key, tuple):
            label, num, den = key
            if _numeric(metrics.get(num)) and _numeric(metrics.get(den)):
                shown.append((label, f"{format_value(metrics[num])}/{format_value(metrics[den])}"))
        elif _numeric(metrics.get(key)):
            shown.append((key, format_value(metrics[key])))
        if len(shown) == _MAX_SHOWN:
            return shown
    if kind not in _KEYS or not shown:
        shown = [(k, format_value(v)) for k, v in metrics.items() if _numeric(v)][:2]
    return shown


def clip(text: str, width: int = MAX_LINE) -> str:
    """`text` cut to `width` characters (an ellipsis marks the cut)."""
    return text if len(text) <= width else text[: width - 1] + "…"


def check_rows(checks: Sequence[Mapping[str, Any]]) -> list[tuple[bool, str, str, str]]:
    """Each gate check as (passed, metric, value, threshold) from its `expr`, `value`, `passed`.

    `expr` is `PHASE.METRIC OP NUMBER` (validated by the spec), so it splits on whitespace.
    """
    rows = []
    for check in checks:
        parts = str(check.get("expr", "")).split()
        metric = parts[0] if parts else "?"
        threshold = " ".join(parts[1:]) or "?"
        rows.append((bool(check.get("passed")), metric, format_value(check.get("value")), threshold))
    return rows


def next_commands(run_id: str, gate: str) -> list[str]:
    """The exact commands a reviewer types next at `gate`: read, decide, resume."""
    return [
        f"runner gate {run_id}",
        f"runner decide {run_id} --gate {gate} --decision proceed|iterate|abort --reviewer WHO --reason '...'",
        f"runner resume {run_id}",
    ]
