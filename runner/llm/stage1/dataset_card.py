"""The dataset card (`README.md`) of an export: YAML front matter for the Hub, then the facts.

The front matter (`yaml.safe_dump`, so no value can end it early) names `train.parquet` as the
train split, so `load_dataset(FOLDER)` finds it. The body gives the counts, the QC metrics and
the critic figures of the phases the export read (as of its iteration: the run's final one),
the run's parameters, model hashes, git commit and seed. Text a user or a model wrote (metric
names, parameter values, licenses) never reaches the Markdown raw: table cells are
HTML-escaped with `|`, backticks and brackets neutralised, and structured values sit in code
fences longer than any backtick run inside them.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import yaml

from runner.llm.builtin import input_names
from runner.store.run_folder import RunFolder

__all__ = ["CRITIC_FIGURES", "cell", "fence", "render_card"]

CRITIC_FIGURES = ("scored", "accepted", "acceptance", "probe_auc", "probe_accuracy", "label_bias")
# Metrics only a QC phase (`qc`, `merge`) reports; a generator's own rates are not a QC table.
_QC_MARKERS = ("delimiter_leakage", "median_response_tokens", "pair_acceptance", "instruction_acceptance")
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def cell(value: Any) -> str:
    """`value` as one Markdown table cell that cannot end the cell, the row, or open HTML."""
    if isinstance(value, float):
        value = f"{value:.0f}" if value.is_integer() else f"{value:.4g}"
    text = html.escape(str(value), quote=True).replace("\r", " ").replace("\n", " ")
    for raw, safe in (("|", "\\|"), ("`", "&#96;"), ("[", "&#91;"), ("]", "&#93;")):
        text = text.replace(raw, safe)
    return text


def fence(text: str, lang: str = "") -> str:
    """`text` in a code fence longer than any backtick run in it."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    marks = "`" * max(3, longest + 1)
    return f"{marks}{lang}\n{text.rstrip()}\n{marks}"


def _table(heads: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _inputs(ctx: Any) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Input phase -> (its metrics, its first record), from the instance the export read."""
    found: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for name in input_names(ctx):
        try:
            folder = Path(ctx.input_dir(name))
        except (AttributeError, KeyError):
            continue
        try:
            metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metrics = {}
        first: dict[str, Any] = {}
        try:
            with open(folder / "records.jsonl", encoding="utf-8") as fh:
                line = fh.readline()
            first = json.loads(line) if line.strip() else {}
        except (OSError, ValueError):
            pass
        found[name] = (metrics if isinstance(metrics, dict) else {}, first if isinstance(first, dict) else {})
    return found


def _run_facts(ctx: Any) -> dict[str, Any]:
    """The run's name, effective parameters and git dirty flag, read from its folder."""
    state: dict[str, Any] = {}
    manifest: dict[str, Any] = {}
    try:
        folder = RunFolder(Path(ctx.run_dir).parent, Path(ctx.run_dir).name)
    except Exception:  # no run folder around the phase (run outside the engine): no such facts
        return {"name": None, "params": None, "dirty": None}
    state = folder.read_snapshot() or {}
    try:
        manifest = json.loads(folder.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    git = manifest.get("git") if isinstance(manifest, dict) else None
    return {"name": state.get("name"), "params": state.get("params"),
            "dirty": git.get("dirty") if isinstance(git, dict) else None}


def _front_matter(title: str, license_id: str, rows: int) -> str:
    size = next((label for limit, label in _SIZES if rows < limit), "n>1M")
    meta = {
        "pretty_name": title,
        "license": license_id,
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "sft", "instruction-tuning"],
        "size_categories": [size],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": "train.parquet"}]}],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def render_card(ctx: Any, source: str, counts: dict[str, int], license_id: str,
                pairs: list[dict[str, Any]], hashes: dict[str, str]) -> str:
    """The card's text (see the module docstring)."""
    facts, inputs = _run_facts(ctx), _inputs(ctx)
    title = f"{facts['name'] or ctx.run_id} SFT pairs"
    lines = [_front_matter(title, license_id, counts["rows"]), f"# {cell(title)}", ""]
    lines += [f"{counts['rows']} instruction-response pairs: the kept records of phase "
              f"`{cell(source)}` in run `{cell(ctx.run_id)}`, exported by phase `{cell(ctx.phase)}` "
              f"in iteration {cell(ctx.iteration)}.", ""]
    lines += ["## Use", "", fence(
        'from datasets import load_dataset\n\n'
        'ds = load_dataset("parquet", data_files="train.parquet", split="train")\n'
        '# or: load_dataset("json", data_files="train.jsonl", split="train")\n'
        '# TRL SFTTrainer: keep ONE format; with both, its format check may pick either:\n'
        'chat = ds.select_columns(["messages"])                  # conversational\n'
        'plain = ds.select_columns(["prompt", "completion"])     # prompt-completion', "python"), ""]
    lines += ["Columns: `id`; `messages` (the instruction as the user's turn, the response as the "
              "assistant's); `prompt` and `completion` (the same texts); `provenance` (run, "
              "iteration and phase that wrote the pair, spec sha256, git commit, model hash, batch "
              "seed, and that phase's settings as JSON).", ""]
    lines += ["## Counts", ""] + _table(["what", "count"], [
        [f"records in {source}", counts["source_records"]],
        ["exported pairs (rows)", counts["rows"]],
        ["not kept (keep: false)", counts["not_kept"]],
        ["kept but without an instruction or a response", counts["incomplete"]],
    ])
    qc = {n: m for n, (m, _) in inputs.items() if any(k in m for k in _QC_MARKERS)}
    lines += [f"## Quality checks (iteration {cell(ctx.iteration)})", ""]
    if not qc:
        lines += ["No QC phase among the export's inputs.", ""]
    for name, metrics in qc.items():
        lines += [f"### {cell(name)}", ""] + _table(["metric", "value"], [[k, v] for k, v in sorted(metrics.items())])
    critics = {n: m for n, (m, first) in inputs.items()
               if str(first.get("stage", "")).endswith("_critic") or "probe_auc" in m}
    if critics:
        shown = [k for k in CRITIC_FIGURES if any(k in m for m in critics.values())]
        lines += ["## Critics", ""] + _table(
            ["critic phase", *shown], [[n, *(m.get(k, "—") for k in shown)] for n, m in critics.items()])
    commit = ctx.git_commit or "none (the spec is not in a git repository)"
    if facts["dirty"]:
        commit = f"{commit} (with uncommitted changes)"
    models = [[n, (first.get("provenance") or {}).get("model_hash")] for n, (_, first) in inputs.items()
              if (first.get("provenance") or {}).get("model_hash")]
    lines += ["## Provenance", ""] + _table(["what", "value"], [
        ["run id", ctx.run_id], ["seed of the run", getattr(ctx, "run_seed", None)],
        ["spec sha256", ctx.spec_sha256], ["git commit", commit],
        *([f"sha256 of {name}", digest] for name, digest in hashes.items()),
    ])
    if models:
        lines += ["Models (the `model_hash` in each phase's records):", ""]
        lines += _table(["phase", "model hash"], models)
    lines += ["## Parameters", ""]
    if facts["params"] is not None:
        lines += ["The run's parameters in the exported iteration:", "",
                  fence(yaml.safe_dump(facts["params"], sort_keys=True, allow_unicode=True), "yaml"), ""]
    settings = {n: (first.get("provenance") or {}).get("params") for n, (_, first) in inputs.items()}
    settings = {n: v for n, v in settings.items() if v} or {
        source: (pairs[0].get("provenance") or {}).get("params")}
    for name, values in settings.items():
        if values:
            lines += [f"Settings of phase {cell(name)}:", "",
                      fence(yaml.safe_dump(values, sort_keys=True, allow_unicode=True), "yaml"), ""]
    return "\n".join(lines)
