"""Generic building blocks, one concept per file."""

from jaxopt_zoo.transforms.averaging import (
    EmaWeightsState,
    SwaState,
    averaged_params,
    ema_weights,
    swa,
)
from jaxopt_zoo.transforms.cautious import cautious, cautious_mask
from jaxopt_zoo.transforms.clipping import clip, clip_by_block_rms, clip_by_global_norm
from jaxopt_zoo.transforms.complex_valued import (
    SplitRealAndImaginaryArrays,
    SplitRealAndImaginaryState,
    split_real_and_imaginary,
)
from jaxopt_zoo.transforms.conditional import SkipNotFiniteState, all_finite, skip_not_finite
from jaxopt_zoo.transforms.learning_rate import (
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from jaxopt_zoo.transforms.linesearch import (
    BacktrackingLinesearchInfo,
    ScaleByBacktrackingLinesearchState,
    ScaleByZoomLinesearchState,
    ZoomLinesearchInfo,
    scale_by_backtracking_linesearch,
    scale_by_zoom_linesearch,
    value_and_grad_from_state,
)
from jaxopt_zoo.transforms.lookahead import LookaheadState, lookahead
from jaxopt_zoo.transforms.masking import MaskedState, PartitionState, masked, partition
from jaxopt_zoo.transforms.mechanic import MechanicState, mechanize
from jaxopt_zoo.transforms.momentum import EmaState, TraceState, ema, trace
from jaxopt_zoo.transforms.normalize import NormalizeState, normalize
from jaxopt_zoo.transforms.plateau import ReduceOnPlateauState, reduce_on_plateau
from jaxopt_zoo.transforms.privacy import (
    DifferentiallyPrivateAggregateState,
    differentially_private_aggregate,
)
from jaxopt_zoo.transforms.sam import SamState, sam, sam_gradient, sam_perturbation
from jaxopt_zoo.transforms.trust_ratio import scale_by_trust_ratio
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights, add_l2_regularization

__all__ = [
    "cautious",
    "cautious_mask",
    "add_decayed_weights",
    "add_l2_regularization",
    "all_finite",
    "averaged_params",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "ema",
    "ema_weights",
    "EmaState",
    "EmaWeightsState",
    "lookahead",
    "LookaheadState",
    "masked",
    "MaskedState",
    "partition",
    "PartitionState",
    "sam",
    "sam_gradient",
    "sam_perturbation",
    "SamState",
    "reduce_on_plateau",
    "ReduceOnPlateauState",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "scale_by_trust_ratio",
    "ScaleByScheduleState",
    "skip_not_finite",
    "SkipNotFiniteState",
    "swa",
    "SwaState",
    "trace",
    "TraceState",
    # optax.contrib's transforms and wrappers (contrib-a)
    "differentially_private_aggregate",
    "DifferentiallyPrivateAggregateState",
    "mechanize",
    "MechanicState",
    "normalize",
    "NormalizeState",
    "split_real_and_imaginary",
    "SplitRealAndImaginaryArrays",
    "SplitRealAndImaginaryState",
    # line searches
    "BacktrackingLinesearchInfo",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByZoomLinesearchState",
    "ZoomLinesearchInfo",
    "scale_by_backtracking_linesearch",
    "scale_by_zoom_linesearch",
    "value_and_grad_from_state",
]
