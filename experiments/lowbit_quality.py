"""Low-bit quality (issue 19): does quantized state or bfloat16 parameters cost validation loss?

Variants, each trained with the same seeds and the same data order on every workload:

- ``f32``: AdamW with float32 state and parameters, the baseline;
- ``8bit``: ``adamw_8bit`` (bitsandbytes' block-wise dynamic maps, blocks of 256);
- ``fp8``: ``adamw_fp8`` (torchao's float8_e4m3fn moments, blocks of 256);
- ``4bit``: ``adamw_4bit`` (torchao's 4-bit maps, blocks of 128);
- ``bf16-sr``: AdamW on bfloat16 parameters without a float32 copy, stochastic rounding
  (``Techniques(bf16_params=True)``);
- ``adam-mini``: Adam-mini (one second moment per block), compared against ``f32``.

Every variant shares the learning rate, ``b1=0.9``, ``b2=0.999``, ``eps=1e-8`` and
``weight_decay=1e-4`` (AdamW's default here; the registered low-bit names and Adam-mini
default to other decays, so it is passed explicitly). Quantized leaves are those of at
least 4096 elements (the libraries' threshold); smaller ones stay float32.

Workloads:

- ``charlm``: the char-LM recipe of docs/language-model.md: the 0.83M-parameter transformer
  (4 layers, 4 heads, width 128, context 128) on Shakespeare, batch 64, ``--lm-steps``
  steps (800), peak lr 3e-3, clip-norm 1, warm-up (5% of the steps) + cosine to 0, weight
  decay on kernels only (``decay_mask``); validation loss (nats per character) on 256
  held-out windows, every tenth of the budget;
- ``cnn``: the reference CNN on MNIST (60k train, validated on the 10k test set), batch 64,
  ``--cnn-epochs`` epochs (2), constant lr 1e-3; evaluated four times an epoch.

Adam-mini's blocks: its authors' name rules, with this repository's names mapped to the
rules' intent: the fused ``qkv`` kernel one block per head (of q, k and v), the attention
``proj`` and the LM ``head`` one per output neuron, and the CNN's ``Conv``/``Dense``
kernels one per output channel/neuron (the rules would give one per tensor to names they
do not know).

Reported per workload: final validation loss per variant (mean ± std over seeds), the
relative difference to ``f32`` computed per seed (variant seed s against ``f32`` seed s;
mean ± std), the baseline's own seed spread (std / mean) beside it, the issue's threshold
(1% for 8-bit and FP8 state, 2% for 4-bit state and bf16-sr; none for Adam-mini: a
comparison) and whether the mean relative difference is within it, the optimizer-state
bytes per parameter on that model (``state_bytes_per_param``), parameter bytes, and seconds
per run (wall clock, the first seed's compilation included).

    python experiments/lowbit_quality.py                  # everything: hours, see below
    python experiments/lowbit_quality.py --quick          # a smoke run (1-2 min on 2 cores)
    python experiments/lowbit_quality.py --workloads cnn --variants f32,8bit --seeds 2
    python experiments/lowbit_quality.py --lm-options width=64,depth=2   # a smaller char-LM

Time (2-core CPU, measured at small scale under a load average of about 5 from other
jobs, so an upper estimate): the char-LM takes about 2.8 s a step (8-bit state the same)
and 7 s per evaluation, about 40 min per run (about 0.8 s a step, 11 min a run, on a quiet
machine: docs/language-model.md); the CNN about 0.04 s a step and 2 s per evaluation, about
45 s an epoch. 6 variants x 3 seeds: 18 runs of each, about 3.5 h in all on a quiet machine.
Every variant's first seed compiles its step (seconds).

Writes ``results.json``, ``table.md`` and ``curves.png`` (validation loss against the step,
one panel per workload, mean over seeds with a ± std band) into --output; every finished
(workload, variant, seed) run is cached in ``runs/`` so an interrupted run continues (a
cached run made with other settings is trained again).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp

from jaxopt_zoo.registry import state_bytes_per_param
from jaxopt_zoo.train import TrainConfig
from jaxopt_zoo.train.lm import LM_DEFAULTS, load_lm_data
from jaxopt_zoo.train.loop import steps_per_epoch
from jaxopt_zoo.train.report import write_json
from jaxopt_zoo.train.runner import (
    RunSpec,
    build_model,
    load_data,
    run,
    run_lengths_of,
    sample_input,
    to_builtin,
)
from jaxopt_zoo.train.techniques import Techniques
from jaxopt_zoo.transforms.bf16_params import params_for

BASELINE = "f32"
# The hyperparameters every variant shares (besides the workload's learning rate).
SHARED = {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 1e-4}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A row: the registered optimizer, bfloat16 parameters or not, the issue's threshold
    on the relative difference of final validation loss to ``f32`` (None: compare only)."""

    name: str
    optimizer: str
    bf16_params: bool = False
    threshold: Optional[float] = None
    about: str = ""


VARIANTS: Dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("f32", "adamw", about="float32 state and parameters (baseline)"),
        Variant("8bit", "adamw_8bit", threshold=0.01, about="8-bit state (bitsandbytes)"),
        Variant("fp8", "adamw_fp8", threshold=0.01, about="FP8 e4m3 state (torchao)"),
        Variant("4bit", "adamw_4bit", threshold=0.02, about="4-bit state (torchao)"),
        Variant(
            "bf16-sr", "adamw", bf16_params=True, threshold=0.02,
            about="bfloat16 parameters, stochastic rounding, float32 state",
        ),
        Variant("adam-mini", "adam_mini", about="one second moment per block"),
    )
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Workload:
    """A model, its data, its training config and recipe (``Techniques``) and its lr."""

    name: str
    model: str
    model_options: Optional[Dict[str, int]]
    config: TrainConfig
    lr: float
    recipe: Techniques
    describe: str


def _adam_mini_partition(workload: str) -> Callable:
    """The block kinds of this repository's parameter names (see the module docstring)."""

    def partition(name: str, leaf: Any) -> Optional[str]:
        if not name.endswith("kernel"):
            return None  # biases, norms, embeddings: the authors' rules
        if workload == "cnn":
            return "columns"  # one per output channel / neuron
        if name.endswith("qkv.kernel"):
            return "heads"
        if name.endswith(("proj.kernel", "head.kernel")):
            return "columns"
        return None

    return partition


def spec_for(v: Variant, w: Workload) -> RunSpec:
    """The variant's optimizer on the workload's recipe."""
    kw: Dict[str, Any] = dict(SHARED)
    if v.optimizer == "adam_mini":
        opts = w.model_options or {}
        kw.update(partition=_adam_mini_partition(w.name))
        if "width" in opts:
            kw.update(dim=opts["width"], n_heads=opts["heads"])
    recipe = dataclasses.replace(w.recipe, bf16_params=v.bf16_params)
    return RunSpec(v.optimizer, lr=w.lr, kwargs=kw, label=v.name, techniques=recipe)


def make_workloads(args) -> Dict[str, Workload]:
    quick = args.quick
    lm_steps = args.lm_steps
    # quick: one small block whose 32 x 128 MLP kernels (4096 elements) are quantized
    lm_opts = dict(context=16, width=32, depth=1, heads=2) if quick else dict(LM_DEFAULTS)
    lm_opts.update(getattr(args, "lm_options", None) or {})
    lm = Workload(
        "charlm",
        "charlm",
        lm_opts,
        TrainConfig(
            batch_size=16 if quick else 64,
            steps=lm_steps,
            eval_every=max(1, lm_steps // 10),
            eval_batch_size=128,
            progress=False,
        ),
        3e-3,
        Techniques(
            clip_norm=1.0,
            schedule="warmup-cosine",
            warmup_steps=max(1, round(0.05 * lm_steps)),
            decay_mask=True,
        ),
        f"char transformer {lm_opts}, batch {16 if quick else 64}, {lm_steps} steps, "
        f"peak lr 3e-3, clip-norm 1, warm-up {max(1, round(0.05 * lm_steps))} + cosine, "
        "decay on kernels only",
    )
    cnn = Workload(
        "cnn",
        "cnn",
        None,
        TrainConfig(batch_size=64, epochs=args.cnn_epochs, progress=False),
        1e-3,
        Techniques(),
        f"reference CNN on MNIST{' (512 train / 256 val images)' if quick else ''}, batch 64, "
        f"{args.cnn_epochs} epoch(s), constant lr 1e-3",
    )
    return {w.name: w for w in (lm, cnn)}


def load_workload_data(w: Workload, args):
    """``(train, val)``; the CNN's config gains four evaluations an epoch."""
    if w.model == "charlm":
        opts = w.model_options or {}
        train, val, _ = load_lm_data(
            args.data_dir, context=opts["context"], eval_windows_count=16 if args.quick else 256
        )
        return w, train, val
    train, val = load_data(
        "mnist",
        args.data_dir,
        train_limit=512 if args.quick else None,
        val_limit=256 if args.quick else None,
    )
    per_epoch = steps_per_epoch(len(train.labels), w.config)
    config = dataclasses.replace(w.config, eval_every=max(1, per_epoch // 4))
    return dataclasses.replace(w, config=config), train, val


def memory(spec: RunSpec, w: Workload, tx, train) -> Dict[str, float]:
    """Optimizer-state and parameter bytes per parameter on this workload's model (shapes
    only: ``jax.eval_shape``)."""
    model = build_model(w.model, "flax", w.model_options)
    x = sample_input(train)
    params = jax.eval_shape(
        lambda: params_for(tx, model.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"])
    )
    leaves = jax.tree.leaves(params)
    n = sum(math.prod(p.shape) for p in leaves)
    return {
        "state_bytes_per_param": state_bytes_per_param(tx, params),
        "param_bytes_per_param": sum(math.prod(p.shape) * p.dtype.itemsize for p in leaves) / n,
        "num_params": n,
    }


def setup_record(w: Workload, v: Variant) -> dict:
    """What a cached run must match to be reused."""
    return to_builtin(
        {
            "optimizer": v.optimizer,
            "bf16_params": v.bf16_params,
            "lr": w.lr,
            "shared": SHARED,
            "model_options": w.model_options,
            "config": {
                k: getattr(w.config, k) for k in ("batch_size", "epochs", "steps", "eval_every")
            },
            "recipe": w.recipe.record(),
            "describe": w.describe,
        }
    )


def run_variant(w: Workload, v: Variant, seeds, train, val, cache: Path, say) -> List[dict]:
    """Every seed of one (workload, variant), each cached in ``cache`` when it ends."""
    spec = spec_for(v, w)
    setup = setup_record(w, v)
    tx = None
    mem = None
    compiled = False
    out = []
    for seed in seeds:
        path = cache / f"{w.name}-{v.name}-seed{seed}.json"
        if path.exists():
            rec = json.loads(path.read_text())
            if rec.get("setup") == setup:
                out.append(rec)
                say(f"  {w.name:6s} {v.name:9s} seed {seed}: cached, val_loss "
                    f"{rec['history'][-1]['val_loss']:.4f}")  # fmt: skip
                continue
            say(f"  {path.name}: made with other settings; training it again")
        if tx is None:  # one object for every seed: the step compiles once
            tx = spec.build(*run_lengths_of(train, w.config))
            mem = memory(spec, w, tx, train)
        config = dataclasses.replace(w.config, seed=int(seed))
        t0 = time.perf_counter()
        _, history = run(
            spec, train, val, model=w.model, config=config, tx=tx, model_options=w.model_options
        )
        seconds = time.perf_counter() - t0
        rec = to_builtin(
            {
                "workload": w.name,
                "variant": v.name,
                "seed": int(seed),
                "setup": setup,
                "seconds": seconds,
                "compiled": not compiled,  # the first run of this process compiles the step
                **(mem or {}),
                "history": history,
            }
        )
        compiled = True
        write_json(path, rec)
        say(f"  {w.name:6s} {v.name:9s} seed {seed}: val_loss "
            f"{history[-1]['val_loss']:.4f} ({seconds:.1f} s)")  # fmt: skip
        out.append(rec)
    return out


# --------------------------------------------------------------------------- analysis


def _mean_std(xs: Sequence[float]):
    xs = [float(x) for x in xs]
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _seconds(recs: Sequence[dict]) -> dict:
    """Seconds per run without compilation (the mean over the runs that reused a compiled
    step) where there is such a run; else the mean over all, compilation included."""
    warm = [float(r["seconds"]) for r in recs if not r.get("compiled", True)]
    return {
        "seconds_per_run": statistics.fmean(warm or [float(r["seconds"]) for r in recs]),
        "seconds_include_compile": not warm,
    }


def summarize(runs: Dict[str, List[dict]]) -> List[dict]:
    """One row per variant of a workload (``runs``: {variant: records, seeds in order})."""
    base = {r["seed"]: float(r["history"][-1]["val_loss"]) for r in runs.get(BASELINE, [])}
    base_mean, base_std = _mean_std(base.values()) if base else (math.nan, math.nan)
    rows = []
    for name, recs in runs.items():
        v = VARIANTS[name]
        finals = {r["seed"]: float(r["history"][-1]["val_loss"]) for r in recs}
        mean, std = _mean_std(finals.values())
        common = sorted(set(finals) & set(base))
        rel = [(finals[s] - base[s]) / base[s] for s in common] if name != BASELINE else []
        rel_mean, rel_std = _mean_std(rel) if rel else (None, None)
        if v.threshold is None or rel_mean is None:
            met = "baseline" if name == BASELINE else "compare"
        else:
            # the issue asks for "within" the threshold; a variant lower than the baseline
            # by more is not worse, so it is told apart: "lower" (within: "yes")
            if abs(rel_mean) <= v.threshold:
                met = "yes"
            else:
                met = "no" if rel_mean > 0 else "lower"
        rows.append(
            {
                "variant": name,
                "optimizer": v.optimizer,
                "about": v.about,
                "seeds": sorted(finals),
                "final_val_loss": [finals[s] for s in sorted(finals)],
                "final_mean": mean,
                "final_std": std,
                "rel_diff": rel,
                "rel_diff_mean": rel_mean,
                "rel_diff_std": rel_std,
                "baseline_spread": base_std / base_mean if base else None,
                "threshold": v.threshold,
                "met": met,
                "state_bytes_per_param": recs[0].get("state_bytes_per_param"),
                "param_bytes_per_param": recs[0].get("param_bytes_per_param"),
                **_seconds(recs),
            }
        )
    return rows


def curves(runs: Dict[str, List[dict]]) -> Dict[str, dict]:
    """Validation loss against the step: mean and std over seeds, per variant."""
    out = {}
    for name, recs in runs.items():
        steps = [int(h["step"]) for h in recs[0]["history"]]
        vals = [[float(h["val_loss"]) for h in r["history"]] for r in recs]
        per_step = list(zip(*vals))
        out[name] = {
            "step": steps,
            "mean": [statistics.fmean(x) for x in per_step],
            "std": [statistics.stdev(x) if len(x) > 1 else 0.0 for x in per_step],
        }
    return out


def _pct(x: Optional[float], std: Optional[float] = None) -> str:
    if x is None:
        return "—"
    return f"{100 * x:+.2f}%" + ("" if std is None else f" ± {100 * std:.2f}%")


def table(report: Dict[str, dict], seeds: Sequence[int]) -> str:
    lines = []
    for wl, r in report.items():
        lines += [
            f"\n**{wl}**: {r['describe']}; final validation loss over seeds "
            f"{', '.join(map(str, seeds))}\n",
            "| variant | final val loss (mean ± std) | vs f32, per seed (mean ± std) "
            "| f32 seed spread (std/mean) | threshold | met | state B/param | param B/param "
            "| s/run |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in r["rows"]:
            thr = "compare" if row["threshold"] is None else f"{100 * row['threshold']:.0f}%"
            if row["variant"] == BASELINE:
                thr = "—"
            spread = row["baseline_spread"]
            lines.append(
                f"| {row['variant']} | {row['final_mean']:.4f} ± {row['final_std']:.4f} | "
                f"{_pct(row['rel_diff_mean'], row['rel_diff_std'])} | "
                f"{'—' if spread is None else f'{100 * spread:.2f}%'} | {thr} | {row['met']} | "
                f"{row['state_bytes_per_param']:.2f} | {row['param_bytes_per_param']:.0f} | "
                f"{row['seconds_per_run']:.1f}{'*' if row['seconds_include_compile'] else ''} |"
            )
    lines.append(
        "\n'met': yes: |mean relative difference| within the threshold (issue 19); no: higher "
        "(worse) than f32 by more; lower: lower (better) than f32 by more. State bytes per "
        "parameter on the workload's own model (leaves under 4096 elements stay float32). "
        "s/run: wall clock of one run, the mean over the seeds that reused the compiled step "
        "(* where every run compiled it: compilation included)."
    )
    return "\n".join(lines) + "\n"


def plot(report: Dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report), figsize=(5.5 * len(report), 4), squeeze=False)
    for ax, (wl, r) in zip(axes[0], report.items()):
        for name, c in r["curves"].items():
            mean, std = jnp.asarray(c["mean"]), jnp.asarray(c["std"])
            (line,) = ax.plot(c["step"], mean, label=name, lw=1.2)
            ax.fill_between(c["step"], mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss" + (" (nats/char)" if wl == "charlm" else ""))
        ax.set_title(f"{wl}: mean over seeds ± std")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="charlm,cnn")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..S-1 (3; --quick: 1)")
    p.add_argument("--lm-steps", type=int, default=None, help="char-LM steps (800; --quick: 20)")
    p.add_argument("--cnn-epochs", type=int, default=None, help="CNN epochs (2; --quick: 1)")
    p.add_argument(
        "--lm-options",
        default="",
        help="the char transformer's size, e.g. 'width=64,depth=2' (context, width, depth, "
        "heads; default the recipe's 128, 128, 4, 4)",
    )
    p.add_argument("--output", default="experiments/results/lowbit_quality")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quick", action="store_true", help="tiny model and data: a smoke run")
    args = p.parse_args(argv)
    q = args.quick
    args.seeds = args.seeds if args.seeds is not None else (1 if q else 3)
    args.lm_steps = args.lm_steps if args.lm_steps is not None else (20 if q else 800)
    args.cnn_epochs = args.cnn_epochs if args.cnn_epochs is not None else (1 if q else 2)
    for flag in ("seeds", "lm_steps", "cnn_epochs"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    try:
        pairs = [kv.split("=") for kv in args.lm_options.split(",") if kv.strip()]
        args.lm_options = {k.strip(): int(v) for k, v in pairs}
    except ValueError:
        p.error(f"--lm-options: expected key=int pairs, got {args.lm_options!r}")
    unknown = set(args.lm_options) - set(LM_DEFAULTS)
    if unknown:
        p.error(f"--lm-options: unknown {sorted(unknown)}; expected some of {list(LM_DEFAULTS)}")
    all_workloads = make_workloads(args)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for wl in workloads:
        if wl not in all_workloads:
            p.error(f"unknown workload {wl!r}; expected some of {', '.join(all_workloads)}")
    for v in variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v!r}; expected some of {', '.join(VARIANTS)}")
    seeds = list(range(args.seeds))
    out = Path(args.output)
    cache = out / "runs"
    cache.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        print(line, flush=True)

    t0 = time.perf_counter()
    report: Dict[str, dict] = {}
    for wl in workloads:
        w, train, val = load_workload_data(all_workloads[wl], args)
        runs = {}
        for name in variants:
            say(f"{wl} / {name} ({time.perf_counter() - t0:.0f}s)")
            runs[name] = run_variant(w, VARIANTS[name], seeds, train, val, cache, say)
        report[wl] = {
            "describe": w.describe,
            "lr": w.lr,
            "rows": summarize(runs),
            "curves": curves(runs),
        }
    text = table(report, seeds)
    print(text)
    (out / "table.md").write_text(text)
    write_json(
        out / "results.json",
        to_builtin(
            {
                "quick": q,
                "seeds": seeds,
                "shared_hyperparameters": SHARED,
                "workloads": report,
            }
        ),
    )
    plot(report, out)
    say(f"wrote {out}/table.md, results.json, curves.png ({time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
