"""Markdown tables from the JSON that update_bench.py / train_bench.py write with --json.

python benchmarks/report.py update results_update.json
python benchmarks/report.py train results_train.json

Files written since the machine block was added (``{"machine": ..., "rows": [...]}``) get a
line naming the machine and its load first; a run on a busy machine is marked "not a result".
Older files (a bare list of rows) are read as before.
"""

from __future__ import annotations

import json
import sys


def update_tables(rows) -> str:
    out = []
    for size in dict.fromkeys(r["size"] for r in rows):
        out.append(
            f"\n**{size} parameters** (ms per update; in brackets: throughput relative "
            "to optax with donation, > 1 is faster)\n"
        )
        variants = []
        for r in rows:
            for k in r["ms"]:
                if not k.startswith("stream") and k not in variants:
                    variants.append(k)
        torch_cols = [v for v in variants if v.startswith("torch")]
        ours_cols = [v for v in variants if not v.startswith("torch")]
        cols = ours_cols + torch_cols
        out.append(
            "| optimizer | leaves | "
            + " | ".join(cols)
            + " | best ours vs optax | best ours vs torch best |"
        )
        out.append("|---|---:|" + "---:|" * (len(cols) + 2))
        for r in (r for r in rows if r["size"] == size):
            o = r["ms"]["optax (donated)"]
            cells = []
            for c in cols:
                ms = r["ms"].get(c)
                cells.append("" if ms is None else f"{ms:.2f} ({o / ms:.2f}x)")
            vt = r.get("best_ours_vs_torch")
            out.append(
                f"| {r['optimizer']} | {r['leaves']} | "
                + " | ".join(cells)
                + f" | **{r['best_ours_vs_optax']:.2f}x** | "
                + (f"**{vt:.2f}x** ({r['best_torch']})" if vt else "n/a")
                + " |"
            )
        streams = {}
        for r in (r for r in rows if r["size"] == size):
            for k, v in r["ms"].items():
                if k.startswith("stream"):
                    streams.setdefault(k, []).append(v)
        n = {"100K": 1e5, "1M": 1e6, "8M": 8e6}[size]
        out.append(
            "\nStream probe (in-place `p = a*p + b*g`, 12 B/element), median over the "
            "rows: "
            + ", ".join(
                f"{k}: {sorted(v)[len(v) // 2]:.2f} ms = "
                f"{12 * n / (sorted(v)[len(v) // 2] * 1e-3) / 1e9:.0f} GB/s"
                for k, v in streams.items()
            )
        )
    return "\n".join(out)


def memory_table(rows) -> str:
    out = [
        "| optimizer | size | leaves | variant | args MB | temporaries MB | peak / (params + "
        "grads + state) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        for name, m in r.get("memory", {}).items():
            peak = m["arguments"] + m["outputs"] - m["aliased"] + m["temporaries"]
            needed = m["arguments"]  # params + grads + state, all passed in
            out.append(
                f"| {r['optimizer']} | {r['size']} | {r['leaves']} | {name} | "
                f"{m['arguments'] / 2**20:.0f} | {m['temporaries'] / 2**20:.1f} | "
                f"{peak / needed:.3f} |"
            )
    return "\n".join(out)


def train_table(rows) -> str:
    out = [
        "| model | variant | ms/step | vs PyTorch | epoch s | test acc | peak RSS MB | "
        "over base MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['variant']} | {r['ms_step']:.2f} | "
            f"{r['ms_step_vs_torch']:.2f}x | {r['epoch_s']:.1f} | {r['test_acc']:.4f} | "
            f"{r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} |"
        )
    return "\n".join(out)


def machine_line(block) -> str:
    """One line saying where and under what load the numbers were measured."""
    load = lambda x: "unknown" if x is None else f"{x[0]:.2f}"  # noqa: E731
    flags = " ".join(block.get("isa_flags") or []) or "unknown"
    line = (
        f"Machine: {block['cpu']}, {block['cores']} cores, ISA flags {flags}; load average "
        f"{load(block['load_before'])} at the start, {load(block['load_after'])} at the end "
        f"({block['started']})"
    )
    if not block["quiet"]:
        line += f". **{block['busy']}**: the ratios below are not a result"
    return line


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    kind, path = argv
    with open(path) as f:
        data = json.load(f)
    rows = data
    if isinstance(data, dict):
        rows = data["rows"]
        print(machine_line(data["machine"]))
    if kind == "update":
        print(update_tables(rows))
        print()
        print(memory_table(rows))
    else:
        print(train_table(rows))


if __name__ == "__main__":
    main()
