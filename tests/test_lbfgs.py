"""L-BFGS, its line searches and ``minimize``.

Parity: ``jz.lbfgs`` follows ``optax.lbfgs`` (its zoom line search) iterate for iterate on
Rosenbrock (2-D and 100-D), an L2-regularised logistic regression and a tree of a matrix, a
conv kernel, a vector and a scalar: float64 to 1e-10 (in fact bit for bit: the same
decisions and the same arithmetic, down to the cubic interpolation as one 2x2 matrix
product, inner products as contractions over all axes and <y, y> as a sum of squares, each
of which rounds differently written otherwise), float32 to 1e-5, over 100-150 steps, with
two hyperparameter settings (the second: memory 5, H_0 = I, a learning rate, a capped
step and another curvature constant), and with the backtracking search.

Second references (iteration counts, not iterates): scipy's L-BFGS-B (Moré-Thuente line
search, H_0 scaled from the first pair on) and jaxopt's LBFGS (its own zoom, H_0 = I at the
start) reach the same gradient-norm tolerance in comparable numbers of iterations and
evaluations; the asserts below say how comparable. Where they differ: scipy's ``gtol`` is
on the largest gradient element (we stop scipy by callback on the Euclidean norm, as
``minimize`` and jaxopt do), and optax/ours start from H_0 = min(1, 1/||g_0||) I.

Complex parameters: optax's zoom takes the slope at 0 as Re<u, grad> (grad as given, the
steepest-ascent direction) but along the line as Re(sum(g * u)) with JAX's gradient g, the
conjugate; ours conjugates JAX's complex gradients so both slopes read the same convention
(real parameters: no difference).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import jaxopt_zoo as jz
from tests.helpers import max_rel_err

# --------------------------------------------------------------------------- problems


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _logreg_data(n=200, d=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.sign(x @ rng.normal(size=d) + 0.5 * rng.normal(size=n))
    return x, y


def logreg(w, x, y, lam=1e-2):
    return jnp.mean(jnp.logaddexp(0.0, -y * (x @ w))) + 0.5 * lam * jnp.sum(w * w)


def tree_loss(p):
    """Softmax regression (matrix, bias vector, scalar temperature) plus a quartic in a conv
    kernel: every shape in one loss."""
    x = jnp.linspace(-1.0, 1.0, 30).reshape(6, 5)
    labels = jnp.arange(6) % 4
    logits = (x @ p["w"] + p["b"][None, :]) * jnp.exp(p["s"])
    ce = jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(6), labels])
    k = p["k"]
    return ce + 0.1 * jnp.sum(p["w"] ** 2) + jnp.sum((k - 0.3) ** 2 * (1 + k**2)) + p["s"] ** 2


def _tree_start(dtype):
    rng = np.random.default_rng(3)
    shapes = {"w": (5, 4), "b": (4,), "s": (), "k": (3, 3, 2, 2)}
    return {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}


def _problem(name, dtype):
    if name == "rosenbrock2":
        return rosenbrock, jnp.asarray([-1.2, 1.0], dtype), 100
    if name == "rosenbrock100":
        return rosenbrock, jnp.asarray(np.tile([-1.2, 1.0], 50), dtype), 150
    if name == "logreg":
        x, y = _logreg_data()
        xs, ys = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
        return (lambda w: logreg(w, xs, ys)), jnp.zeros(20, dtype), 100
    return tree_loss, _tree_start(dtype), 100


def iterates(tx, f, p0, steps, reuse):
    """Parameters after each step: one jit + lax.scan, the loss and its gradient taken
    from the line search's state (``reuse``: ours or optax's ``value_and_grad_from_state``)."""
    vg = reuse(f)

    @jax.jit
    def run(p0):
        def body(carry, _):
            p, s = carry
            v, g = vg(p, state=s)
            u, s = tx.update(g, s, p, value=v, grad=g, value_fn=f)
            p = optax.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(body, (p0, tx.init(p0)), None, length=steps)[1]

    return run(p0)


# --------------------------------------------------------------------------- parity with optax

SETTINGS = {
    "default": (lambda: jz.lbfgs(), lambda: optax.lbfgs()),
    "m5-unscaled-capped": (
        lambda: jz.lbfgs(
            0.5,
            memory_size=5,
            scale_init_precond=False,
            linesearch=jz.scale_by_zoom_linesearch(10, max_learning_rate=1.5, curv_rtol=0.5),
        ),
        lambda: optax.lbfgs(
            0.5,
            memory_size=5,
            scale_init_precond=False,
            linesearch=optax.scale_by_zoom_linesearch(10, max_learning_rate=1.5, curv_rtol=0.5),
        ),
    ),
    "backtracking": (
        lambda: jz.lbfgs(linesearch=jz.scale_by_backtracking_linesearch(20, store_grad=True)),
        lambda: optax.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(20, store_grad=True)),
    ),
}
CASES = [
    ("rosenbrock2", "default"),
    ("rosenbrock100", "default"),
    ("logreg", "default"),
    ("tree", "m5-unscaled-capped"),
    ("logreg", "backtracking"),
]


@pytest.mark.parametrize("problem,setting", CASES, ids=[f"{p}-{s}" for p, s in CASES])
def test_iterates_equal_optax_lbfgs_in_float64(problem, setting):
    with jax.enable_x64(True):
        f, p0, steps = _problem(problem, jnp.float64)
        ours, theirs = SETTINGS[setting]
        got = iterates(ours(), f, p0, steps, jz.value_and_grad_from_state)
        want = iterates(theirs(), f, p0, steps, optax.value_and_grad_from_state)
        # the reference moves: it is not a trajectory standing still
        first, last = jax.tree.map(lambda x: x[0], want), jax.tree.map(lambda x: x[-1], want)
        assert max_rel_err(first, last) > 1e-2
        assert max_rel_err(got, want) < 1e-10
        assert float(f(jax.tree.map(lambda x: x[-1], got))) < float(f(p0))


def test_iterates_equal_optax_lbfgs_in_float32():
    # (Rosenbrock 2-D in float32: each block alone equals optax's bit for bit, but the whole
    # step compiles to other fusions, one ulp apart at step 7, which the valley amplifies to
    # 7e-2 by step 100: chaos, not a formula; logistic regression stays bit for bit)
    f, p0, steps = _problem("logreg", jnp.float32)
    got = iterates(jz.lbfgs(), f, p0, steps, jz.value_and_grad_from_state)
    want = iterates(optax.lbfgs(), f, p0, steps, optax.value_and_grad_from_state)
    assert jax.tree.leaves(got)[0].dtype == jnp.float32
    assert max_rel_err(got, want) < 1e-5


# --------------------------------------------------------------------------- scipy and jaxopt


def _scipy_counts(f, x0, gtol):
    """scipy's L-BFGS-B (jax gradients, float64), stopped when the gradient's Euclidean
    norm reaches ``gtol`` (its own pgtol is on the largest element)."""
    vg = jax.jit(jax.value_and_grad(f))
    seen = {"nfev": 0}

    def fun(x):
        seen["nfev"] += 1
        v, g = vg(x)
        seen["g"] = np.asarray(g)
        return float(v), np.asarray(g, np.float64)

    def stop(intermediate_result):
        if np.linalg.norm(vg(intermediate_result.x)[1]) <= gtol:
            raise StopIteration

    opts = dict(maxiter=1000, gtol=0.0, ftol=0.0, maxcor=10)
    res = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", callback=stop, options=opts)
    return res.nit, seen["nfev"], float(np.linalg.norm(vg(res.x)[1]))


def _jaxopt_counts(f, x0, gtol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "JAXopt is no longer maintained"
        import jaxopt

        solver = jaxopt.LBFGS(fun=f, maxiter=1000, tol=gtol, history_size=10)
        res = solver.run(x0)
    g = jax.grad(f)(res.params)
    return int(res.state.iter_num), int(res.state.num_fun_eval), float(jnp.linalg.norm(g))


def test_iterations_to_gtol_are_comparable_to_scipy_and_jaxopt():
    # (benchmarks/lbfgs_bench.py prints the table for Rosenbrock 2-D/100-D too)
    gtol = 1e-6
    with jax.enable_x64(True):
        f, p0, _ = _problem("logreg", jnp.float64)
        res = jz.minimize(f, p0, max_steps=1000, gtol=gtol)
        ours = (int(res.num_steps), int(res.num_fun_evals))
        assert res.reason == "converged" and float(res.grad_norm) <= gtol
        sp_it, sp_ev, sp_g = _scipy_counts(f, np.asarray(p0), gtol)
        jo_it, jo_ev, jo_g = _jaxopt_counts(f, p0, gtol)
    assert sp_g <= gtol and jo_g <= gtol  # all three reached the same tolerance
    # Within a factor 1.5 (+3) of each reference, in iterations and evaluations (measured
    # here: ours 15 / 16 with the default tx and with jz.lbfgs() alike, scipy 11 / 13, jaxopt
    # 12 / 25).
    for it, ev in ((sp_it, sp_ev), (jo_it, jo_ev)):
        assert ours[0] <= 1.5 * it + 3, (ours, it)
        assert ours[1] <= 1.5 * ev + 3, (ours, ev)


# --------------------------------------------------------------------------- minimize


def test_minimize_converges_and_reports_why_it_stopped():
    x, y = _logreg_data()
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    res = jz.minimize(logreg, jnp.zeros(20), args=(x, y), gtol=1e-4)
    assert res.reason == "converged" and float(res.grad_norm) <= 1e-4
    g = jax.grad(logreg)(res.params, x, y)
    assert float(jnp.linalg.norm(g)) == pytest.approx(float(res.grad_norm), rel=1e-5)
    assert float(res.value) == pytest.approx(float(logreg(res.params, x, y)), rel=1e-6)
    assert 1 < int(res.num_steps) < int(res.num_fun_evals)
    # the same loop by hand (minimize's default tx), the line search's value and gradient
    # reused
    tx, p = jz.lbfgs(max_learning_rate=1.0), jnp.zeros(20)
    vg = jz.value_and_grad_from_state(logreg)

    @jax.jit
    def step(p, state):
        v, g = vg(p, x, y, state=state)
        u, state = tx.update(g, state, p, value=v, grad=g, value_fn=logreg, x=x, y=y)
        return optax.apply_updates(p, u), state

    state = tx.init(p)
    for _ in range(int(res.num_steps)):
        p, state = step(p, state)
    np.testing.assert_allclose(p, res.params, rtol=1e-5, atol=1e-6)

    # the same compiled loop for another budget (max_steps, gtol and args are not static)
    short = jz.minimize(logreg, jnp.zeros(20), args=(x, y), gtol=0.0, max_steps=3)
    assert short.reason == "max_steps" and int(short.num_steps) == 3
    # plain gradient descent needs no extra arguments; minimize runs inside jit
    quad = lambda w: jnp.sum((w - 1.0) ** 2)  # noqa: E731
    gd = jax.jit(lambda w: jz.minimize(quad, w, tx=jz.sgd(0.25), gtol=1e-6))(jnp.zeros(3))
    assert int(gd.status) == 0 and int(gd.num_fun_evals) == int(gd.num_steps) + 1
    np.testing.assert_allclose(gd.params, 1.0, atol=1e-6)


def test_minimize_default_takes_the_unit_step_where_optax_grows_it():
    # Features of norm ~1 and a gradient of norm ~1e-2 at the start: the raw-gradient first
    # step is ~100 times too short. optax's unbounded zoom (jz.lbfgs()) grows it by
    # doubling, 8 evaluations; minimize's default (max_learning_rate=1.0, as jaxopt) takes
    # it and lets the next step's gamma rescale. Same optimum, fewer evaluations.
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(200, 1000)) / np.sqrt(1000), jnp.float32)
    y = jnp.sign(x @ jnp.asarray(rng.normal(size=1000), jnp.float32))
    w0 = jnp.zeros(1000)
    assert float(jnp.linalg.norm(jax.grad(logreg)(w0, x, y))) < 0.05
    capped = jz.minimize(logreg, w0, args=(x, y), gtol=1e-4)
    optax_like = jz.minimize(logreg, w0, tx=jz.lbfgs(), args=(x, y), gtol=1e-4)
    assert capped.reason == optax_like.reason == "converged"
    assert int(capped.num_fun_evals) + 4 <= int(optax_like.num_fun_evals)
    np.testing.assert_allclose(capped.params, optax_like.params, atol=2e-3)


def test_a_pair_without_positive_curvature_is_kept_out_of_the_inverse_hessian():
    # On the concave -|p|^2 / 2 a fixed step gives y = -s, <s, y> < 0: the pair would make
    # H indefinite (optax's formula gives gamma = -1, an ascent step on the loss). It is
    # skipped (rho = 0, gamma = 1), as torch.optim.LBFGS does: the step stays -lr * g.
    tx = jz.lbfgs(learning_rate=0.1, linesearch=None)
    p = jnp.array([0.3, -0.4])
    state = tx.init(p)
    for _ in range(2):
        g = -p  # the gradient of -|p|^2 / 2
        u, state = tx.update(g, state, p)
        p_new = optax.apply_updates(p, u)
        assert float(jnp.vdot(u, g)) < 0.0  # a descent step
        p = p_new
    assert float(state[0].weights_memory[0]) == 0.0
    np.testing.assert_allclose(u, -0.1 * g, rtol=1e-6)


def test_minimize_on_a_nonfinite_start_says_so_and_returns_the_start():
    p0 = jnp.array([jnp.nan, 1.0])
    with pytest.warns(RuntimeWarning, match="NaN or infinite at the starting point"):
        res = jz.minimize(rosenbrock, p0)
    assert res.reason == "nonfinite_start" and int(res.num_steps) == 0
    np.testing.assert_array_equal(res.params, p0)
    # a loss that becomes NaN later: the last finite point is kept
    f = lambda w: jnp.where(w[0] > 0.5, jnp.nan, jnp.sum((w - 2.0) ** 2))  # noqa: E731
    res = jz.minimize(f, jnp.zeros(2), tx=jz.sgd(0.3), gtol=1e-8)
    assert res.reason == "nonfinite" and bool(jnp.all(jnp.isfinite(res.params)))
    assert float(res.params[0]) <= 0.5


# --------------------------------------------------------------------------- line searches


def test_line_searches_alone_and_their_errors():
    f = lambda p, target: jnp.sum((p - target) ** 2)  # noqa: E731
    p, t = jnp.zeros(3), jnp.arange(3.0)
    v, g = jax.value_and_grad(f)(p, t)
    for ls in (jz.scale_by_zoom_linesearch(15), jz.scale_by_backtracking_linesearch(15)):
        tx = jz.chain(jz.sgd(0.5), ls)  # the minimum at step 1
        u, s = tx.update(g, tx.init(p), p, value=v, grad=g, value_fn=f, target=t)
        assert float(f(p + u, t)) < 0.05 * float(v)
        assert int(s[1].info.num_linesearch_steps) >= 1
        # without value_fn: says what to pass
        with pytest.raises(TypeError, match=r"needs value_fn=.*value=loss, grad=grads"):
            tx.update(g, tx.init(p), p)
        # a keyword value_fn does not take
        with pytest.raises(TypeError, match=r"\['batch'\] are not arguments of value_fn"):
            tx.update(g, tx.init(p), p, value=v, grad=g, value_fn=f, target=t, batch=1)
    with pytest.raises(ValueError, match="store_grad=True"):
        tx = jz.lbfgs(linesearch=jz.scale_by_backtracking_linesearch(10))
        jz.value_and_grad_from_state(rosenbrock)(p, state=tx.init(p))
    with pytest.raises(ValueError, match="holds no line search"):
        jz.value_and_grad_from_state(rosenbrock)(p, state=jz.adam(1e-3).init(p))
    # no step where the loss is not finite along the direction
    tx = jz.chain(jz.sgd(1.0), jz.scale_by_backtracking_linesearch(5))
    bad = lambda q: jnp.where(jnp.any(q != 0), jnp.inf, 1.0)  # noqa: E731
    u, _ = tx.update(jnp.ones(3), tx.init(p), p, value=1.0, grad=jnp.ones(3), value_fn=bad)
    np.testing.assert_array_equal(u, 0.0)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: jz.lbfgs(memory_size=0), "Invalid memory_size: 0"),
        (lambda: jz.lbfgs(learning_rate=-1.0), "Invalid learning_rate"),
        (lambda: jz.lbfgs(linesearch="wolfe"), "Invalid linesearch: 'wolfe'"),
        (lambda: jz.lbfgs(max_learning_rate=0.0), "Invalid max_learning_rate"),
        (
            lambda: jz.lbfgs(max_learning_rate=1.0, linesearch=None),
            "set the bound there",
        ),
        (lambda: jz.scale_by_lbfgs(memory_size=-2), "Invalid memory_size"),
        (lambda: jz.scale_by_zoom_linesearch(0), "Invalid max_linesearch_steps: 0"),
        (lambda: jz.scale_by_zoom_linesearch(10, curv_rtol=1e-5), "curv_rtol > slope_rtol"),
        (lambda: jz.scale_by_zoom_linesearch(10, slope_rtol=1.5), "Invalid slope_rtol"),
        (lambda: jz.scale_by_zoom_linesearch(10, increase_factor=1.0), "Invalid increase_factor"),
        (lambda: jz.scale_by_zoom_linesearch(10, max_learning_rate=0.0), "max_learning_rate"),
        (lambda: jz.scale_by_zoom_linesearch(10, initial_guess_strategy="x"), "'one' or 'keep'"),
        (lambda: jz.scale_by_backtracking_linesearch(10, decrease_factor=1.5), "decrease_factor"),
        (lambda: jz.scale_by_backtracking_linesearch(-1), "max_backtracking_steps"),
        (lambda: jz.minimize(rosenbrock, jnp.zeros(2), max_steps=-1), "Invalid max_steps"),
        (lambda: jz.minimize(rosenbrock, jnp.zeros(2), gtol=-1.0), "Invalid gtol"),
    ],
)
def test_invalid_hyperparameters_fail_at_construction(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
