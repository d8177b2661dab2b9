"""Optimizer families: each file holds its state, its ``scale_by_*`` block and its aliases."""

from jaxopt_zoo.optim.acprop import ScaleByAcpropState, acprop, scale_by_acprop
from jaxopt_zoo.optim.adabelief import adabelief, scale_by_belief
from jaxopt_zoo.optim.adadelta import ScaleByAdaDeltaState, adadelta, scale_by_adadelta
from jaxopt_zoo.optim.adafactor import (
    FactoredState,
    adafactor,
    scale_by_factored_rms,
    scale_by_param_block_rms,
)
from jaxopt_zoo.optim.adagrad import ScaleByRssState, adagrad, scale_by_rss
from jaxopt_zoo.optim.adam import (
    ScaleByAdamState,
    ScaleByAmsgradState,
    adam,
    adamw,
    amsgrad,
    nadam,
    nadamw,
    scale_by_adam,
)
from jaxopt_zoo.optim.adamax import ScaleByAdamaxState, adamax, adamaxw, scale_by_adamax
from jaxopt_zoo.optim.adan import ScaleByAdanState, adan, proximal_decay, scale_by_adan
from jaxopt_zoo.optim.ademamix import ScaleByAdemamixState, ademamix, scale_by_ademamix
from jaxopt_zoo.optim.adopt import ScaleByAdoptState, adopt, scale_by_adopt
from jaxopt_zoo.optim.cocob import COCOBState, cocob, scale_by_cocob
from jaxopt_zoo.optim.dadapt import DAdaptAdamWState, dadapt_adamw
from jaxopt_zoo.optim.dog import DoGState, DoWGState, dog, dowg, scale_by_dog, scale_by_dowg
from jaxopt_zoo.optim.dpsgd import dpsgd
from jaxopt_zoo.optim.fromage import fromage
from jaxopt_zoo.optim.galore import GaLoreDimensionNumbers, GaLoreState, galore, scale_by_galore
from jaxopt_zoo.optim.lamb import lamb, lars
from jaxopt_zoo.optim.lbfgs import ScaleByLBFGSState, lbfgs, scale_by_lbfgs
from jaxopt_zoo.optim.lion import ScaleByLionState, lion, scale_by_lion
from jaxopt_zoo.optim.madgrad import MadgradState, madgrad, scale_by_madgrad
from jaxopt_zoo.optim.mars import ScaleByMarsState, mars, scale_by_mars
from jaxopt_zoo.optim.momo import MomoAdamState, MomoState, momo, momo_adam
from jaxopt_zoo.optim.muon import ScaleByMuonState, muon, scale_by_muon, scale_by_muon_shape
from jaxopt_zoo.optim.newton_schulz import MuonDimensionNumbers, orthogonalize_by_newton_schulz
from jaxopt_zoo.optim.noisy_sgd import AddNoiseState, add_noise, noisy_sgd
from jaxopt_zoo.optim.novograd import ScaleByNovogradState, novograd, scale_by_novograd
from jaxopt_zoo.optim.optimistic import (
    ScaleByOptimisticGradientState,
    optimistic_adam,
    optimistic_adam_v2,
    optimistic_gradient_descent,
    scale_by_optimistic_gradient,
)
from jaxopt_zoo.optim.polyak import polyak_sgd, scale_by_polyak
from jaxopt_zoo.optim.prodigy import ProdigyState, prodigy
from jaxopt_zoo.optim.psgd_kron import (
    ScaleByKronState,
    precond_update_prob_schedule,
    psgd_kron,
    scale_by_kron,
)
from jaxopt_zoo.optim.radam import radam, scale_by_radam
from jaxopt_zoo.optim.rmsprop import ScaleByRmsState, ScaleByStddevState, rmsprop, scale_by_rms
from jaxopt_zoo.optim.rprop import ScaleByRpropState, rprop, scale_by_rprop
from jaxopt_zoo.optim.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)
from jaxopt_zoo.optim.sgd import sgd
from jaxopt_zoo.optim.shampoo import ScaleByShampooState, scale_by_shampoo, shampoo
from jaxopt_zoo.optim.sign import scale_by_sign, sign_sgd, signum
from jaxopt_zoo.optim.simplified_ademamix import (
    ScaleBySimplifiedAdEMAMixState,
    scale_by_simplified_ademamix,
    simplified_ademamix,
)
from jaxopt_zoo.optim.sm3 import ScaleBySM3State, scale_by_sm3, sm3
from jaxopt_zoo.optim.soap import ScaleBySoapState, decay_after_step, scale_by_soap, soap
from jaxopt_zoo.optim.sophia import (
    HutchinsonState,
    SophiaState,
    hutchinson_estimator_diag_hessian,
    hutchinson_probes,
    scale_by_sophia,
    sophia,
)
from jaxopt_zoo.optim.yogi import scale_by_yogi, yogi

__all__ = [
    "ademamix",
    "adopt",
    "mars",
    "prodigy",
    "ProdigyState",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_mars",
    "ScaleByAdemamixState",
    "ScaleByAdoptState",
    "ScaleByMarsState",
    "ScheduleFreeState",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "amsgrad",
    "FactoredState",
    "lamb",
    "lars",
    "lion",
    "muon",
    "MuonDimensionNumbers",
    "nadam",
    "nadamw",
    "orthogonalize_by_newton_schulz",
    "radam",
    "rmsprop",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_belief",
    "scale_by_factored_rms",
    "scale_by_lion",
    "scale_by_muon",
    "scale_by_muon_shape",
    "scale_by_param_block_rms",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_yogi",
    "ScaleByAdaDeltaState",
    "ScaleByAdamaxState",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByLionState",
    "ScaleByMuonState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByStddevState",
    "sgd",
    "soap",
    "scale_by_soap",
    "ScaleBySoapState",
    "decay_after_step",
    "yogi",
    # optax.contrib's optimizers (contrib-a)
    "acprop",
    "cocob",
    "COCOBState",
    "dadapt_adamw",
    "DAdaptAdamWState",
    "dog",
    "DoGState",
    "dowg",
    "DoWGState",
    "dpsgd",
    "scale_by_acprop",
    "scale_by_cocob",
    "scale_by_dog",
    "scale_by_dowg",
    "scale_by_simplified_ademamix",
    "ScaleByAcpropState",
    "ScaleBySimplifiedAdEMAMixState",
    "simplified_ademamix",
    # L-BFGS
    "lbfgs",
    "scale_by_lbfgs",
    "ScaleByLBFGSState",
    # optax.contrib: GaLore, MADGRAD, MoMo, Sophia
    "GaLoreDimensionNumbers",
    "GaLoreState",
    "galore",
    "scale_by_galore",
    "MadgradState",
    "madgrad",
    "scale_by_madgrad",
    "MomoAdamState",
    "MomoState",
    "momo",
    "momo_adam",
    "HutchinsonState",
    "SophiaState",
    "hutchinson_estimator_diag_hessian",
    "hutchinson_probes",
    "scale_by_sophia",
    "sophia",
    # optax-core
    "adamaxw",
    "ScaleByAdanState",
    "adan",
    "proximal_decay",
    "scale_by_adan",
    "fromage",
    "AddNoiseState",
    "add_noise",
    "noisy_sgd",
    "ScaleByNovogradState",
    "novograd",
    "scale_by_novograd",
    "ScaleByOptimisticGradientState",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "scale_by_optimistic_gradient",
    "polyak_sgd",
    "scale_by_polyak",
    "ScaleByRpropState",
    "rprop",
    "scale_by_rprop",
    "scale_by_sign",
    "sign_sgd",
    "signum",
    "ScaleBySM3State",
    "scale_by_sm3",
    "sm3",
    # issue 20: shampoo
    "ScaleByShampooState",
    "scale_by_shampoo",
    "shampoo",
    # PSGD Kron (issue 20)
    "precond_update_prob_schedule",
    "psgd_kron",
    "scale_by_kron",
    "ScaleByKronState",
]

# Low-bit state (issue 19): 8-bit, 4-bit and FP8 moments.
from jaxopt_zoo.optim.lowbit import (  # noqa: E402
    adam_8bit,
    adamw_4bit,
    adamw_8bit,
    adamw_fp8,
    lion_8bit,
)

__all__ += ["adam_8bit", "adamw_4bit", "adamw_8bit", "adamw_fp8", "lion_8bit"]
# Issue 19: Adam-mini.
from jaxopt_zoo.optim.adam_mini import (  # noqa: E402
    MiniBlocks,
    ScaleByAdamMiniState,
    adam_mini,
    scale_by_adam_mini,
)

__all__ += ["MiniBlocks", "ScaleByAdamMiniState", "adam_mini", "scale_by_adam_mini"]
