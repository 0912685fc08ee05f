"""Variational inference over the paths of ``ppl.sde`` sites: :func:`vsde`.

The variational family is the one of Daems, Opper, Crevecoeur & Birdal, "Variational
inference for SDEs driven by fractional noise" (ICLR 2024, section 4): the posterior path
is the prior SDE with its driving Brownian motion shifted by a control,
``dW -> dW + u_phi(t, state, context) dt``. With MA-fBM noise all OU components share the
one W, so the control enters as ``dY_k = (-gamma_k Y_k + u) dt + dW`` and X's drift gains
``sigma sum_k omega_k u`` (their eq. 13). By Girsanov's theorem (their eq. 14)

    ELBO = E_Q[ sum_i log p(o_i | X_{t_i}) ] - E_Q[ 1/2 int |u|^2 dt ] - KL(q(z) || p(z)),

where z are the program's other latent sites (an initial state ``x0 = ppl.sample(...)``,
priors on drift parameters, the type-I initial OU state), each given a mean-field normal
guide in unconstrained space (the KL is estimated by ``log p(z) - log q(z)`` at
reparameterised draws). ``ppl.param`` sites (drift and diffusion parameters, a Hurst index
``ppl.param("hurst", 0.5, constraint=dist.constraints.unit_interval)``, which is
``sigmoid`` of a free parameter with the MA-fBM weights re-solved from it at every step)
are learned jointly by maximising the ELBO (variational EM).

Estimation: ``num_paths`` reparameterised paths per step (``vmap``), simulated by
Euler-Maruyama on the sde's grid with the Girsanov integral carried as an extra scan state
(:func:`ppl.sde.euler_maruyama`); Adam (optax) steps in one ``lax.scan`` inside one ``jit``
with a progress bar. On the grid this is exactly the discrete-time ELBO of the Euler model
with a Gaussian guide of unit innovation variance and mean ``u sqrt(dt)`` for each
standardised increment (the per-step KL is then exactly ``1/2 u^2 dt``), so the bound
holds for the discretised model too and tightens as the grid is refined.

Beyond the paper (options). In discrete time the unit innovation variance leaves a gap of
order ``dt / (observation variance)`` per observation, which grows as H falls and so biases
a learned Hurst index upwards; ``learn_noise_scale=True`` adds a learned log scale ``s`` of
each standardised increment to the built-in controls (per-step KL ``1/2 [u^2 dt + s^2 - 1 -
log s^2]``, exact Gaussian; the family then contains the exact posterior of a
linear-Gaussian model and s -> 1 as dt -> 0). ``bound="iwae"`` maximises the
importance-weighted bound over the ``num_paths`` paths (Burda et al. 2016) instead.

Result: a :class:`~ppl.Posterior` of ``num_samples`` posterior paths (every latent and
deterministic site, the path included) with ``sample_stats["elbo"]`` (the per-path ELBO
integrand) and ``sample_stats["log_importance_weight"]`` (``log p(path, z, data) -
log q(path, z)``, exact on the grid); ``log_evidence`` is the importance-sampling estimate
``log mean exp(log_importance_weight)``; ``info`` holds ``params`` (learned ``ppl.param``
values), ``elbo`` (the training trace), ``param_trace`` (each ``ppl.param``'s value at every
step, the Hurst trajectory for instance), ``elbo_final`` and ``elbo_std_error`` (the ELBO
over the posterior draws), ``controls`` (the trained controls), ``guide``,
``param_std_error`` (standard errors of the learned params from the ELBO's curvature) and
``mafbm`` (per fractional sde: the speeds, type and relative error of the MA-fBM increment
covariance on the grid at the learned Hurst index).

Defaults for fractional noise (beyond the paper; :func:`vsde`). Measured on one fOU path
(200 observations, sd 0.02, benchmarks/bench_hurst.py), the paper's family (an MLP
control of time and state, unit increment variance) learned H = 0.54 where the exact
likelihood's ML is 0.31, with an ELBO hundreds of nats below the log-likelihood, while the
MA-fBM approximation itself moved the ML of H by < 0.02 (Kalman filter on the augmented
Euler model). So ``control="auto"`` uses, for fractional noise, an affine control per grid
step in units of the standardised increment with learned increment scales (a family that
contains the exact posterior of a linear-Gaussian model) and a longer, decayed Adam run.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints
from ppl.inference.base import (
    RunCache,
    check_count,
    check_key,
    check_option,
    compile_and_call,
    nonfinite_sites_at,
    sites_text,
)
from ppl.inference.kernels import constrain, constrain_site, unconstrain
from ppl.inference.progress import progress_scan
from ppl.semantics.trace import DETERMINISTIC, FACTOR, LATENT, OBSERVED, record

from ppl.errors import (
    ArgumentTypeError,
    NonFiniteWeightError,
    UnsupportedModelError,
    check_positive,
)
from ppl.posterior import Posterior
from ppl.sde import SDE_TAG, controlled

__all__ = ["VSDE", "AffineControl", "MLPControl", "vsde"]

_CONTROLS = ("auto", "mlp", "affine")
#: Defaults of ``control="auto"`` for a program with fractional noise (see :func:`vsde`).
FRACTIONAL_LEARNING_RATE = 0.2
FRACTIONAL_NUM_STEPS = 3000
BROWNIAN_NUM_STEPS = 1000
BROWNIAN_LEARNING_RATE = 1e-2
FINAL_LEARNING_RATE_FACTOR = 0.1
_BOUNDS = ("elbo", "iwae")


# --------------------------------------------------------------------------- controls


def _time_features(t, t0: float, horizon: float, num_features: int):
    """``[s, sin(pi k s), cos(pi k s)]_{k=1..F}`` of the rescaled time s = (t - t0) / T."""
    s = (t - t0) / horizon
    k = jnp.arange(1, num_features + 1, dtype=jnp.result_type(s))
    return jnp.concatenate([s[None], jnp.sin(jnp.pi * k * s), jnp.cos(jnp.pi * k * s)])


class MLPControl(eqx.Module):
    """``u_phi(t, state, context)``: an MLP of Fourier time features, the augmented state
    (and the context, if any), its last layer initialised at zero so training starts from
    the prior (Daems et al., ICLR 2024, section 4; Li et al. 2020's latent SDE drift).
    With ``learn_scale`` it also outputs the log scale of each standardised increment (see
    :func:`ppl.sde.euler_maruyama`)."""

    mlp: eqx.nn.MLP
    t0: float = eqx.field(static=True)
    horizon: float = eqx.field(static=True)
    num_features: int = eqx.field(static=True)
    out_shape: tuple = eqx.field(static=True)
    learn_scale: bool = eqx.field(static=True)

    def __init__(self, key, times, state_size: int, out_shape=(), width: int = 64,
                 depth: int = 2, num_features: int = 8, context_size: int = 0,
                 learn_scale: bool = False):
        times = np.asarray(times, dtype=np.float64)
        self.t0 = float(times[0])
        self.horizon = float(times[-1] - times[0])
        self.num_features = int(num_features)
        self.out_shape = tuple(out_shape)
        self.learn_scale = bool(learn_scale)
        in_size = 1 + 2 * self.num_features + int(state_size) + int(context_size)
        out_size = max(1, math.prod(self.out_shape)) * (2 if self.learn_scale else 1)
        mlp = eqx.nn.MLP(in_size, out_size, width, depth, activation=jnp.tanh, key=key)
        last = mlp.layers[-1]
        self.mlp = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
                               (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))

    def __call__(self, t, state, context=None):
        features = [_time_features(t, self.t0, self.horizon, self.num_features), state]
        if context is not None:
            features.append(jnp.ravel(context))
        inputs = jnp.concatenate([f.astype(state.dtype) for f in features])
        out = self.mlp(inputs)
        if self.learn_scale:
            u, log_scale = jnp.split(out, 2)
            return u.reshape(self.out_shape), log_scale.reshape(self.out_shape)
        return out.reshape(self.out_shape)


class AffineControl(eqx.Module):
    """``u(t_n, state) = a_n + B_n state``: a control affine in the augmented state with its
    own coefficients on each grid step (zero at start). For a linear-Gaussian SDE observed
    with Gaussian noise the optimal (posterior) control is of this form (the h-transform
    drift ``sigma^2 d/dx log beta(t, x)`` is affine in x), so the family is exact there up
    to the unit innovation variance of the discretised guide; with ``learn_scale`` (a log
    scale per step and coordinate) it is exact there."""

    offset: jax.Array
    gain: jax.Array
    log_scale: jax.Array | None
    grid: tuple = eqx.field(static=True)
    out_shape: tuple = eqx.field(static=True)
    standardised: bool = eqx.field(static=True)

    def __init__(self, times, state_size: int, out_shape=(), dtype=None,
                 learn_scale: bool = False, standardised: bool = False):
        times = np.asarray(times, dtype=np.float64)
        num_steps = times.shape[0] - 1
        out_size = max(1, math.prod(tuple(out_shape)))
        dtype = dtype or jnp.result_type(float)
        self.offset = jnp.zeros((num_steps, out_size), dtype)
        self.gain = jnp.zeros((num_steps, out_size, int(state_size)), dtype)
        self.log_scale = jnp.zeros((num_steps, out_size), dtype) if learn_scale else None
        self.grid = tuple(float(t) for t in times)
        self.out_shape = tuple(out_shape)
        self.standardised = bool(standardised)

    def __call__(self, t, state, context=None):
        grid = jnp.asarray(self.grid, dtype=jnp.result_type(t))
        n = jnp.clip(jnp.searchsorted(grid, t, side="right") - 1, 0, self.offset.shape[0] - 1)
        u = (self.offset[n] + self.gain[n] @ state).reshape(self.out_shape)
        if self.standardised:  # coefficients in units of the standardised increment
            u = u / jnp.sqrt(grid[n + 1] - grid[n])
        if self.log_scale is None:
            return u
        return u, self.log_scale[n].reshape(self.out_shape)


class _Controller:
    """What :func:`ppl.sde.controlled` asks for: each sde's control, and a sink for the
    simulations (their Girsanov costs and log importance weights)."""

    def __init__(self, controls: dict, context):
        self.controls = controls
        self.context = context
        self.simulations = {}

    def control(self, name):
        if name not in self.controls:
            raise UnsupportedModelError(
                f"vsde: the sde site '{name}' was not present when the program was first "
                "run; every sde site must appear in every run"
            )
        return self.controls[name]

    def report(self, name, simulation):
        self.simulations[name] = simulation


# --------------------------------------------------------------------------- discovery


class _Compiled(NamedTuple):
    """A cached run: the discovered structure, the controls' static parts, the jitted
    ``run(key, arrays)``."""

    structure: object
    static: dict
    run: object


class _Structure(NamedTuple):
    """The program's sites as vsde sees them, found by one run outside jit."""

    sdes: dict  # name -> metadata (shape, num_ou, times)
    noise_sites: tuple
    guided: tuple  # latent sites with a normal guide: (name, shape)
    supports: dict  # name -> support constraint
    params: dict  # name -> (init value, constraint)


def _discover(key, model, args, kwargs):
    """Run the program once under the prior and classify its sites: ``(structure, the
    prior draws of the guided sites)``."""
    _, _, raw = record(model, key, args, kwargs, densities=False)
    sdes, supports, params, guided = {}, {}, {}, []
    for site in raw.values():
        if site["type"] == "sample" and SDE_TAG in (site.get("infer") or {}):
            meta = site["infer"][SDE_TAG]
            sdes[meta["name"]] = meta
    noise_sites = tuple(f"{n}_noise" for n in sdes)
    for name, site in raw.items():
        if site["type"] == "param":
            constraint = site["kwargs"].get("constraint", constraints.real)
            params[name] = (jnp.asarray(site["value"]), constraint)
        elif site["type"] == "sample" and not site["is_observed"] and name not in noise_sites:
            support = site["fn"].support
            if support.is_discrete:
                raise UnsupportedModelError(
                    f"vsde: the latent site '{name}' is discrete; vsde needs continuous "
                    "latent sites (marginalise it, or use another algorithm)"
                )
            supports[name] = support
            guided.append((name, jnp.shape(site["value"]), site["value"]))
    if not sdes:
        raise UnsupportedModelError("vsde: the program has no ppl.sde site")
    return _Structure(sdes, noise_sites, tuple((n, s) for n, s, _ in guided), supports,
                      params), {n: v for n, _, v in guided}


def _init_value(site):
    """The prior mean of a site where it is finite and in the support, else its draw
    (a ``jnp.where``, so it also runs while traced)."""
    value = site["value"]
    try:
        mean = jnp.broadcast_to(site["fn"].mean, jnp.shape(value))
        usable = jnp.all(jnp.isfinite(mean)) & jnp.all(site["fn"].support(mean))
    except (NotImplementedError, ValueError, TypeError):
        return value
    return jnp.where(usable, mean, value)


def _is_inexact(leaf) -> bool:
    """``eqx.is_inexact_array``, also for the shapes of :func:`eqx.filter_eval_shape`."""
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jnp.issubdtype(leaf.dtype, jnp.inexact)
    return eqx.is_inexact_array(leaf)


def _is_fractional(structure) -> bool:
    return any(meta["num_ou"] > 0 for meta in structure.sdes.values())


def _build_controls(option, key, structure, context, width, depth, num_features,
                    learn_scale):
    """One control per sde site, from the ``control=`` option (``"auto"``: a standardised
    :class:`AffineControl` with learned increment scales for fractional noise, an
    :class:`MLPControl` for Brownian; ``learn_scale=None`` means "as ``auto`` chooses")."""
    context_size = 0 if context is None else int(np.size(context))
    controls = {}
    keys = jax.random.split(key, len(structure.sdes))
    for k, (name, meta) in zip(keys, structure.sdes.items(), strict=True):
        shape = tuple(meta["shape"])
        state_size = max(1, math.prod(shape)) * (1 + meta["num_ou"])
        times = np.asarray(meta["times"])
        if isinstance(option, dict):
            if name not in option:
                raise UnsupportedModelError(
                    f"vsde: control= is a dict without an entry for the sde site '{name}'"
                )
            controls[name] = option[name]
        elif callable(option):
            controls[name] = option
        elif option == "auto" and meta["num_ou"] > 0:
            controls[name] = AffineControl(times, state_size, shape, times.dtype,
                                           True if learn_scale is None else learn_scale,
                                           standardised=True)
        elif option in ("mlp", "auto"):
            controls[name] = MLPControl(k, times, state_size, shape, width, depth,
                                        num_features, context_size, bool(learn_scale))
        else:
            controls[name] = AffineControl(times, state_size, shape, times.dtype,
                                           bool(learn_scale))
    return controls


# --------------------------------------------------------------------------- the ELBO


class _PathTerms(NamedTuple):
    elbo: jax.Array
    log_weight: jax.Array
    values: dict
    log_likelihood: dict
    hurst: dict  # sde site -> its Hurst index (fractional noise only)


def _guide_draw(guide, structure, key):
    """Reparameterised draws of the guided latent sites and ``sum log q`` (constrained)."""
    values, log_q = {}, jnp.zeros(())
    for i, (name, shape) in enumerate(structure.guided):
        loc, log_scale = guide[name]["loc"], guide[name]["log_scale"]
        z = loc + jnp.exp(log_scale) * jax.random.normal(jax.random.fold_in(key, i), shape,
                                                         loc.dtype)
        value, log_det = constrain_site(structure.supports[name], z)
        log_q = log_q + jnp.sum(-0.5 * ((z - loc) / jnp.exp(log_scale)) ** 2 - log_scale
                                - 0.5 * jnp.log(2 * jnp.pi))
        log_q = log_q - log_det
        values[name] = value
    return values, log_q


def _param_constraints(structure):
    return {n: c for n, (_, c) in structure.params.items()}


def _constrained_params(free, structure):
    return constrain(_param_constraints(structure), free)[0]


def _one_path(phi, fixed, structure, static_controls, model, args, kwargs, context, key):
    """One reparameterised path: its ELBO integrand and log importance weight (Girsanov,
    Daems et al. 2024 eq. 14; the weight is exact for the Euler-discretised model)."""
    key_guide, key_model = jax.random.split(key)
    values, log_q = _guide_draw(phi["guide"], structure, key_guide)
    free = {**fixed, **phi["params"]}
    substitutions = {**values, **_constrained_params(free, structure)}
    controls = {n: eqx.combine(phi["control"][n], static_controls[n]) for n in static_controls}
    controller = _Controller(controls, context)
    with controlled(controller):
        _, trace, _ = record(model, key_model, args, kwargs, substitutions=substitutions)
    observed = trace.names(OBSERVED, FACTOR)
    log_lik = sum((jnp.sum(trace.log_probs[n]) for n in observed), jnp.zeros(()))
    log_prior = sum((jnp.sum(trace.log_probs[n]) for n, _ in structure.guided), jnp.zeros(()))
    sims = controller.simulations.values()
    girsanov = sum((s.girsanov for s in sims), jnp.zeros(()))
    sde_log_weight = sum((s.log_weight for s in sims), jnp.zeros(()))
    elbo = log_lik + log_prior - log_q - girsanov
    log_weight = log_lik + log_prior - log_q + sde_log_weight
    return _PathTerms(
        elbo,
        log_weight,
        trace.select(LATENT, DETERMINISTIC),
        {n: trace.log_probs[n] for n in trace.names(OBSERVED)},
        {n: s.hurst for n, s in controller.simulations.items() if s.hurst is not None},
    )


#: The curvature of the ELBO is estimated on this many times ``num_paths`` paths.
CURVATURE_PATHS_FACTOR = 4
#: Finite-difference step of the Hessian in the unconstrained parameters.
CURVATURE_STEP = 1e-2
#: No curvature beyond this many scalar parameters (``info["param_std_error"]`` is None).
CURVATURE_MAX_PARAMS = 16


def _curvature_std_error(phi, fixed, structure, path, key, num):
    """Standard errors of the learned ``ppl.param`` values from the curvature of the Monte
    Carlo ELBO (``num`` paths, common random numbers) in the free parameters at the fit
    (central differences of its gradient, step 1e-2, error O(1e-4) relative),
    the controls and guides held there: ``sqrt(diag(J (-H)^-1 J'))`` with H the Hessian in
    the unconstrained parameters and J the Jacobian of the constraining map (delta method).
    Holding q fixed gives the curvature of a lower bound that touches the profile ELBO at
    the fit, so this can understate the uncertainty (compare the profile in
    benchmarks/bench_hurst.py). NaN where -H is not positive definite; None without learned
    params or with more than ``CURVATURE_MAX_PARAMS`` scalars of them."""
    if not phi["params"]:
        return None
    flat, unravel = jax.flatten_util.ravel_pytree(phi["params"])
    if flat.shape[0] > CURVATURE_MAX_PARAMS:  # 2n gradients of num paths each: skipped
        return None
    keys = jax.random.split(key, num)

    def elbo(v):
        p = {**phi, "params": unravel(v)}
        return jnp.mean(jax.vmap(path, in_axes=(None, 0))(p, keys).elbo)

    def constrained(v):
        return _constrained_params({**fixed, **unravel(v)}, structure)

    # central differences of the exact gradient (the MA-fBM weights have a first-order
    # custom_jvp only); all 2n shifted gradients in one vmap
    step = CURVATURE_STEP * jnp.eye(flat.shape[0], dtype=flat.dtype)
    grads = jax.vmap(jax.grad(elbo))(jnp.concatenate([flat + step, flat - step]))
    n = flat.shape[0]
    hess = (grads[:n] - grads[n:]) / (2 * CURVATURE_STEP)
    out, unravel_out = jax.flatten_util.ravel_pytree(constrained(flat))
    jac = jax.jacfwd(lambda v: jax.flatten_util.ravel_pytree(constrained(v))[0])(flat)
    lam, vecs = jnp.linalg.eigh(-0.5 * (hess + hess.T))
    ok = jnp.all(lam > 0)
    inv = (vecs / jnp.where(ok, lam, 1.0)) @ vecs.T
    var = jnp.einsum("ij,jk,ik->i", jac, inv, jac)
    return unravel_out(jnp.where(ok, jnp.sqrt(var), jnp.nan).astype(out.dtype))


def _mafbm_info(structure, hurst_draws):
    """``info["mafbm"]``: per fractional sde site, the MA-fBM it used (speeds, type) and the
    relative error of its increment covariance on the site's grid against the exact fBM at
    the learned (or given) Hurst index (:func:`ppl.sde.approximation_error`)."""
    from ppl.sde import approximation_error

    out = {}
    for name, meta in structure.sdes.items():
        noise = meta.get("fbm")
        if noise is None or name not in hurst_draws:
            continue
        hurst = float(np.mean(np.asarray(hurst_draws[name], dtype=np.float64)))
        gamma_min = noise.gamma_min if noise.gamma_min is not None else 1.0 / noise.gamma_max
        out[name] = {
            "hurst": hurst, "num_ou": noise.num_ou, "gamma_min": float(gamma_min),
            "gamma_max": float(noise.gamma_max), "kind": noise.kind,
            "increment_covariance_error": approximation_error(
                noise, np.asarray(meta["times"]), hurst),
        }
    return out


# --------------------------------------------------------------------------- the algorithm


class VSDE:
    """``vsde(num_steps, num_paths, ...)``; see :func:`vsde`."""

    def __init__(self, num_steps=None, num_paths=16, learning_rate=None, optimizer=None,
                 control="auto", width=64, depth=2, num_features=8, num_samples=1000,
                 context=None, learn_params=True, init_scale=0.1, progress_bar=True,
                 bound="elbo", learn_noise_scale=None):
        self.bound = check_option("bound", bound, _BOUNDS)
        self.learn_noise_scale = None if learn_noise_scale is None else bool(learn_noise_scale)
        self.num_steps = None if num_steps is None else check_count("num_steps", num_steps)
        self.num_paths = check_count("num_paths", num_paths)
        self.num_samples = check_count("num_samples", num_samples)
        if isinstance(control, str):
            check_option("control", control, _CONTROLS)
        elif not (callable(control) or isinstance(control, dict)):
            raise ArgumentTypeError(
                f"vsde: control must be 'mlp', 'affine', a callable u(t, state, context) or a "
                f"dict sde site -> callable; got {control!r}"
            )
        check_positive("init_scale", init_scale)
        self.learning_rate = (None if learning_rate is None
                              else check_positive("learning_rate", learning_rate))
        self.optimizer = optimizer
        self.control = control
        self.width = check_count("width", width)
        self.depth = check_count("depth", depth)
        self.num_features = check_count("num_features", num_features)
        self.context = None if context is None else jnp.asarray(context)
        self.learn_params = bool(learn_params)
        self.init_scale = float(init_scale)
        self.progress_bar = bool(progress_bar)
        self._cache = RunCache()

    # -- setup ----------------------------------------------------------------------
    def _initial(self, key, model, args, kwargs):
        """Discover the program's sites (one eager run) and build the initial variational
        parameters: ``(structure, static parts of the controls, phi, fixed params)``."""
        structure, static = self._discovered(key, model, args, kwargs)
        phi, fixed = self._start(key, structure, model, args, kwargs)
        return structure, static, phi, fixed

    def _discovered(self, key, model, args, kwargs):
        """``(structure, static parts of the controls)``: one eager run of the program
        (:func:`_discover`; its errors are raised here, before compiling)."""
        key_discover, key_control = jax.random.split(key)
        structure, _ = _discover(key_discover, model, args, kwargs)
        if isinstance(self.control, str):  # built here: their shapes suffice (no init ops)
            controls = eqx.filter_eval_shape(lambda k: self._controls(k, structure),
                                             key_control)
        else:  # the user's own: as given
            controls = self._controls(key_control, structure)
        static = {name: eqx.partition(control, _is_inexact)[1]
                  for name, control in controls.items()}
        return structure, static

    def _num_steps(self, structure) -> int:
        """``num_steps``, by default 3000 for ``control="auto"`` on fractional noise (the
        learned Hurst index settles there; 1000 steps left H = 0.46 for an exact ML of 0.51
        in benchmarks/bench_hurst.py's design) and 1000 otherwise."""
        if self.num_steps is not None:
            return self.num_steps
        if self.control == "auto" and _is_fractional(structure):
            return FRACTIONAL_NUM_STEPS
        return BROWNIAN_NUM_STEPS

    def _optimizer(self, structure):
        """The given optimizer, else Adam: for ``control="auto"`` on fractional noise at
        ``learning_rate`` (default 0.2) cosine-decayed to a tenth over ``num_steps`` (so the
        learned Hurst index settles), otherwise constant (default 1e-2)."""
        if self.optimizer is not None:
            return self.optimizer
        if self.control == "auto" and _is_fractional(structure):
            lr = FRACTIONAL_LEARNING_RATE if self.learning_rate is None else self.learning_rate
            return optax.adam(optax.cosine_decay_schedule(lr, self._num_steps(structure),
                                                          FINAL_LEARNING_RATE_FACTOR))
        return optax.adam(BROWNIAN_LEARNING_RATE if self.learning_rate is None
                          else self.learning_rate)

    def _controls(self, key, structure):
        return _build_controls(self.control, key, structure, self.context, self.width,
                               self.depth, self.num_features, self.learn_noise_scale)

    def _start(self, key, structure, model, args, kwargs):
        """``(phi, fixed)``, the initial variational parameters for ``key`` given the
        discovered ``structure``: the guides at the prior means (or draws) of one prior run,
        the controls initialised from ``key``, the params at their init values. Traceable,
        so the compiled run computes it (the eager discovery runs once per structure)."""
        key_discover, key_control = jax.random.split(key)
        _, _, raw = record(model, key_discover, args, kwargs)
        dynamic = {name: eqx.partition(control, eqx.is_inexact_array)[0]
                   for name, control in self._controls(key_control, structure).items()}
        guide = {}
        for name, _ in structure.guided:
            loc = unconstrain({name: raw[name]["fn"].support},
                              {name: _init_value(raw[name])})[name]
            guide[name] = {"loc": loc, "log_scale": jnp.full(jnp.shape(loc),
                                                             math.log(self.init_scale),
                                                             loc.dtype)}
        free = unconstrain(_param_constraints(structure),
                           {n: raw[n]["value"] for n in structure.params})
        learned, fixed = (free, {}) if self.learn_params else ({}, free)
        return {"control": dynamic, "guide": guide, "params": learned}, fixed

    def _compiled(self, split, structure, static, model):
        """One jitted function of ``(key, arrays)``: the initial parameters
        (:meth:`_start`), the optimisation scan, the posterior draws and what the
        :class:`~ppl.Posterior` reports (constrained params, guide scales, the initial
        point for a diagnosis)."""
        treedef, is_array, static_leaves = split.treedef, split.is_array, split.static
        optimizer, context, bound = self._optimizer(structure), self.context, self.bound
        num_paths, num_samples, num_steps, progress_bar = (
            self.num_paths, self.num_samples, self._num_steps(structure), self.progress_bar
        )

        def run(key, arrays):
            it = iter(arrays)
            leaves = [next(it) if a else s for a, s in zip(is_array, static_leaves, strict=True)]
            args, kwargs = jax.tree.unflatten(treedef, leaves)
            key_init, key = jax.random.split(key)
            phi, fixed = self._start(key_init, structure, model, args, kwargs)
            initial = {**constrain(structure.supports,
                                   {n: g["loc"] for n, g in phi["guide"].items()})[0],
                       **_constrained_params({**fixed, **phi["params"]}, structure)}

            def path(phi, key):
                return _one_path(phi, fixed, structure, static, model, args, kwargs, context,
                                 key)

            def negative_elbo(phi, key):
                terms = jax.vmap(path, in_axes=(None, 0))(phi, jax.random.split(key, num_paths))
                if bound == "iwae":
                    return -(logsumexp(terms.log_weight) - math.log(num_paths))
                return -jnp.mean(terms.elbo)

            def step(carry, key):
                phi, opt_state = carry
                loss, grads = jax.value_and_grad(negative_elbo)(phi, key)
                updates, opt_state = optimizer.update(grads, opt_state, phi)
                learned = _constrained_params({**fixed, **phi["params"]}, structure)
                return (optax.apply_updates(phi, updates), opt_state), (-loss, learned)

            key_fit, key_draw, key_curv = jax.random.split(key, 3)
            (phi, _), (elbos, param_trace) = progress_scan(step, (phi, optimizer.init(phi)),
                                            jax.random.split(key_fit, num_steps), desc="vsde",
                                            enable=progress_bar)
            draws = jax.vmap(path, in_axes=(None, 0))(phi, jax.random.split(key_draw,
                                                                            num_samples))
            params = _constrained_params({**fixed, **phi["params"]}, structure)
            guide = {m: {"loc": g["loc"], "scale": jnp.exp(g["log_scale"])}
                     for m, g in phi["guide"].items()}
            std_error = _curvature_std_error(phi, fixed, structure, path, key_curv,
                                             CURVATURE_PATHS_FACTOR * num_paths)
            return phi, elbos, param_trace, draws, initial, params, guide, std_error

        return jax.jit(run)

    # -- run --------------------------------------------------------------------------
    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Fit the controlled posterior of every ``ppl.sde`` path of ``model(*args,
        **kwargs)`` (and the normal guides, and the ``ppl.param`` sites), then draw
        ``num_samples`` posterior paths. Returns a :class:`~ppl.Posterior`."""
        key = check_key(key)

        def build(split):  # the eager discovery run: once per argument structure
            structure, static = self._discovered(jax.random.split(key)[0], model, args, kwargs)
            return _Compiled(structure, static, self._compiled(split, structure, static, model))

        compiled, (phi, elbos, param_trace, draws, initial, params, guide,
                   std_error) = compile_and_call(
            self._cache, model, args, kwargs, build,
            lambda entry, split: (entry, entry.run(key, split.arrays)),
        )
        self._check_finite(elbos, draws, lambda neginf: nonfinite_sites_at(
            model, args, kwargs, initial, include_neginf=neginf))
        return self._posterior(compiled.structure, compiled.static, phi, params, guide, elbos,
                               param_trace, draws, std_error)

    def _check_finite(self, elbos, draws, diagnose):
        """Raise :class:`NonFiniteWeightError` when the ELBO of a training step or of a
        posterior draw is not finite. ``diagnose(include_neginf)`` names the sites with a
        non-finite log density at the initial point (the guides' initial means and the
        parameters' initial values; :func:`~ppl.inference.base.nonfinite_sites_at`): then
        the model is to blame ("infinite data" at site 'y', say), not the learning rate,
        which is suggested only when that point is finite and the ELBO was finite at
        first."""
        elbos = np.asarray(elbos)
        log_w = np.asarray(draws.log_weight)
        bad = ~np.isfinite(elbos)
        if not bad.any() and np.all(np.isfinite(log_w)):
            return
        k = int(np.flatnonzero(bad)[0]) if bad.any() else None
        value = elbos[k] if k is not None else log_w[~np.isfinite(log_w)][0]
        lines = diagnose(bool(np.isneginf(value)))
        where = f"at step {k}" if k is not None else "at the posterior draws"
        if lines or k == 0:
            found = sites_text(lines) or (
                "none found (check the drift/diffusion for blow-ups along the path, the "
                "factor terms, or refine times)"
            )
            raise NonFiniteWeightError(
                f"vsde: the ELBO is {value} {where} (the model's log density is not finite, "
                f"not a learning-rate problem); site(s) with a non-finite log density at the "
                f"initial point: {found}"
            )
        since = f" (finite up to step {k - 1})" if k else ""
        raise NonFiniteWeightError(
            f"vsde: the ELBO became {value} {where}{since} while the data and the initial "
            "log density are finite; lower learning_rate, check the drift/diffusion for "
            "blow-ups, or refine times"
        )

    def _posterior(self, structure, static, phi, params, guide, elbos, param_trace, draws,
                   std_error=None):
        elbo_draws = np.asarray(draws.elbo)
        log_w = np.asarray(draws.log_weight)
        n = log_w.shape[0]
        log_evidence = float(np.logaddexp.reduce(log_w) - np.log(n))
        controls = {m: eqx.combine(phi["control"][m], static[m]) for m in static}
        return Posterior(
            draws.values,
            log_evidence=log_evidence,
            sample_stats={"elbo": draws.elbo, "log_importance_weight": draws.log_weight},
            log_likelihood=draws.log_likelihood,
            method="vsde",
            info={
                "params": params,
                "elbo": elbos,
                "param_trace": param_trace,
                "elbo_final": float(elbo_draws.mean()),
                "elbo_std_error": float(elbo_draws.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
                "controls": controls,
                "guide": guide,
                "sdes": tuple(structure.sdes),
                "param_std_error": std_error,
                "mafbm": _mafbm_info(structure, draws.hurst),
            },
        )

    def __repr__(self):
        return (f"vsde(num_steps={self.num_steps}, num_paths={self.num_paths}, control="
                f"{self.control!r}, num_samples={self.num_samples})")


def vsde(num_steps=None, num_paths=16, learning_rate=None, optimizer=None, control="auto",
         width=64, depth=2, num_features=8, num_samples=1000, context=None, learn_params=True,
         init_scale=0.1, progress_bar=True, bound="elbo", learn_noise_scale=None) -> VSDE:
    """Variational inference for SDE paths (Daems et al., ICLR 2024), Brownian or fractional.

    ``num_steps`` Adam steps (``optimizer=`` any optax optimizer, default
    ``adam(learning_rate)``) on a Monte Carlo ELBO of ``num_paths`` controlled paths per
    step. ``control`` is ``"auto"`` (default; see below),
    ``"mlp"`` (:class:`MLPControl`, ``width`` x ``depth``, ``num_features`` Fourier time
    features, last layer zero), ``"affine"`` (:class:`AffineControl`), a callable
    ``u(t, state, context)`` (an equinox module's float arrays are trained) or a dict sde
    site -> such a callable; ``state`` is the flat augmented state ``[X, Y_1..Y_K]`` and
    ``context`` the ``context=`` array (or None). Other latent sites get normal guides in
    unconstrained space (initial scale ``init_scale``); ``ppl.param`` sites are learned
    when ``learn_params``. ``.run(key, model, *args, **kwargs)`` returns a
    :class:`~ppl.Posterior` of ``num_samples`` posterior paths (see the module docstring).
    ``bound="iwae"`` maximises the importance-weighted bound ``log mean_i w_i`` over the
    ``num_paths`` paths instead (Burda et al. 2016; tighter, so less biased parameters).
    ``learn_noise_scale=True`` lets the built-in controls also scale each standardised
    increment (a discrete-time extension of the paper's family, which fixes it at 1: it
    removes the O(dt) gap that the unit variance leaves next to precise observations; the
    per-step KL becomes ``1/2 [u^2 dt + s^2 - 1 - log s^2]``). ``progress_bar=True``
    (default) shows a tqdm bar over the optimisation steps.

    Defaults (``None``) depend on the program. With a fractional-noise sde and
    ``control="auto"``: a standardised :class:`AffineControl` (coefficients in units of the
    standardised increment, so Adam's step is one scale for every grid step) with learned
    increment scales, 3000 steps, Adam at 0.2 cosine-decayed to 0.02. On one fOU path with
    200 observations of sd 0.02 (benchmarks/bench_hurst.py) this learns H inside the exact
    likelihood's 95% profile interval, where the paper's MLP family at 1000 steps learned
    0.54 for an exact ML of 0.31 (an ELBO ~450 nats below the log-likelihood: the family
    and the optimisation, not the MA-fBM approximation, caused the bias). Otherwise: an
    :class:`MLPControl` without scales, 1000 steps, Adam at 1e-2 (as before).
    ``info["param_std_error"]`` holds standard errors of the learned params from the
    ELBO's curvature (:func:`_curvature_std_error`), with the variational posterior held at
    the fit: a lower bound, not a confidence interval (on bench_hurst's design it was 5-10x
    smaller than the exact profile interval's half-width / 1.96), and ``info["mafbm"]`` per
    fractional sde the MA-fBM used and its ``increment_covariance_error`` on the grid at
    the learned H (:func:`ppl.sde.approximation_error`).
    """
    return VSDE(num_steps, num_paths, learning_rate, optimizer, control, width, depth, num_features,
                num_samples, context, learn_params, init_scale, progress_bar, bound,
                learn_noise_scale)
