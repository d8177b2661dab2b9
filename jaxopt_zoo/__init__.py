"""jaxopt_zoo: optimizers for JAX as pure, chainable gradient transformations.

Every optimizer is an ``optax.GradientTransformation``: ``tx.init(params)`` and
``tx.update(grads, state, params)``; apply with ``optax.apply_updates``.
"""

from jaxopt_zoo import schedules
from jaxopt_zoo.core import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    chain,
    global_norm,
    identity,
)
from jaxopt_zoo.optim import (
    FactoredState,
    ScaleByAdaDeltaState,
    ScaleByAdamState,
    ScaleByAdamaxState,
    ScaleByAmsgradState,
    ScaleByLionState,
    ScaleByRmsState,
    ScaleByRssState,
    ScaleByStddevState,
    adabelief,
    adadelta,
    adafactor,
    adagrad,
    adam,
    adamax,
    adamw,
    amsgrad,
    lamb,
    lars,
    lion,
    nadam,
    nadamw,
    radam,
    rmsprop,
    scale_by_adadelta,
    scale_by_adam,
    scale_by_adamax,
    scale_by_belief,
    scale_by_factored_rms,
    scale_by_lion,
    scale_by_param_block_rms,
    scale_by_radam,
    scale_by_rms,
    scale_by_rss,
    scale_by_yogi,
    sgd,
    yogi,
)
from jaxopt_zoo.registry import available, entry, get
from jaxopt_zoo.transforms import (
    EmaState,
    MaskedState,
    PartitionState,
    ScaleByScheduleState,
    SkipNotFiniteState,
    TraceState,
    add_decayed_weights,
    add_l2_regularization,
    all_finite,
    clip,
    clip_by_block_rms,
    clip_by_global_norm,
    ema,
    masked,
    partition,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
    scale_by_trust_ratio,
    skip_not_finite,
    trace,
)

__version__ = "0.1.0"
