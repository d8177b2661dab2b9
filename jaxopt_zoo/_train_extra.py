"""Imported first by the packages that need the ``[train]`` extra (``jaxopt_zoo.train``,
``jaxopt_zoo.models``, the command line): raises :class:`~jaxopt_zoo._extras.MissingExtraError`
naming the extra when flax, orbax-checkpoint or tqdm is not installed."""

from jaxopt_zoo._extras import require

require("jaxopt_zoo.train, jaxopt_zoo.models and the jaxopt-zoo command")
