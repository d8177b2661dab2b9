"""The ``sample`` command: text from the newest checkpoint of a ``--model charlm`` run.

jaxopt-zoo sample --checkpoint-dir runs/lm-ckpt --prompt "ROMEO:" --length 300
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jaxopt_zoo.cli.args import UsageError, nonneg_float, nonneg_int, positive_int


def add_sample_parser(sub) -> None:
    """The ``sample`` subcommand's parser, added to ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "sample", help="print text from the newest checkpoint of a --model charlm run"
    )
    p.add_argument(
        "--checkpoint-dir",
        required=True,
        metavar="DIR",
        help="the --checkpoint-dir of a 'train --model charlm' run",
    )
    p.add_argument("--prompt", default="\n", help="the text to continue (default: a newline)")
    p.add_argument(
        "--length", type=positive_int, default=500, metavar="N", help="characters to generate"
    )
    p.add_argument(
        "--temperature",
        type=nonneg_float,
        default=1.0,
        metavar="T",
        help="softmax temperature; 0 takes the most likely character (default 1)",
    )
    p.add_argument("--seed", type=nonneg_int, default=0)


def _run_metadata(directory: Path) -> dict:
    from jaxopt_zoo.train.checkpoint import RUN_FILE

    run_file = directory / RUN_FILE
    if not run_file.is_file():
        what = "does not exist" if not directory.exists() else f"holds no {RUN_FILE}"
        raise UsageError(
            f"--checkpoint-dir {directory} {what}: no checkpoint to sample from. Train "
            "one with 'jaxopt-zoo train --model charlm --steps N --checkpoint-dir DIR'"
        )
    try:
        meta = json.loads(run_file.read_text()).get("metadata", {})
    except (OSError, ValueError, AttributeError) as e:
        raise UsageError(f"cannot read {run_file}: {e}") from None
    if meta.get("model") != "charlm" or "vocab" not in meta:
        raise UsageError(
            f"--checkpoint-dir {directory} holds a checkpoint of a --model "
            f"{meta.get('model', '(unknown)')} run; sample needs a --model charlm run"
        )
    return meta


def cmd_sample(args) -> int:
    import jax
    import numpy as np

    from jaxopt_zoo.data.text import CharVocab
    from jaxopt_zoo.models.transformer import sample
    from jaxopt_zoo.train import Checkpointer, init_loop_state
    from jaxopt_zoo.train.runner import RunSpec, build_model
    from jaxopt_zoo.train.techniques import Techniques

    directory = Path(args.checkpoint_dir).absolute()
    meta = _run_metadata(directory)
    vocab = CharVocab(meta["vocab"])
    try:
        prompt = vocab.encode(args.prompt)
    except ValueError as e:
        raise UsageError(f"--prompt: {e}; the model knows {vocab.chars!r}") from None
    if prompt.size == 0:
        raise UsageError("--prompt is empty; give at least one character")
    options = meta["model_options"]
    model = build_model("charlm", meta.get("init", "flax"), options)
    # The optimizer only gives the template its state's structure: rebuild it as trained.
    spec = RunSpec(
        meta["optimizer"],
        lr=meta.get("lr"),
        kwargs=meta.get("opt_arg", {}),
        techniques=Techniques(**meta.get("techniques", {})),
    )
    tx = spec.build(total_steps=meta.get("steps") or 10**6)
    sample_input = np.zeros((1, options["context"]), np.int32)
    template = init_loop_state(model, tx, sample_input, meta.get("seed", 0))
    with Checkpointer(directory, metadata=None) as ckpt:
        state, message = ckpt.restore_latest(template)
    if state is None:
        raise UsageError(f"{message.split(':')[0]}: nothing to sample from")
    print(f"{message} Sampling {args.length} characters.", file=sys.stderr, flush=True)
    tokens = sample(
        model,
        state.params,
        prompt,
        args.length,
        jax.random.PRNGKey(args.seed),
        args.temperature,
    )
    print(args.prompt + vocab.decode(np.asarray(tokens)))
    return 0
