"""The SDE primitive: ``ppl.sde``, a latent path of a stochastic differential equation.

A program writes::

    path = ppl.sde("x", drift, diffusion, x0, times, noise=ppl.brownian(), params=theta)

and gets the path of ``dX = b(t, X, params) dt + sigma(t, X, params) dW`` on the grid
``times`` (shape ``(N + 1,) + x0.shape``, ``path[0] = x0``), recorded as the deterministic
site ``name``. Observations are ordinary ``ppl.observe`` sites on entries of the path.

Representation. The path is a deterministic function of standard-normal noise, drawn as
the ordinary latent site ``f"{name}_noise"`` of shape ``(N,) + x0.shape`` (one increment
per grid step and coordinate), so prior simulation, NUTS, SVI and importance sampling all
see an ordinary (non-centred) model. The scheme is Euler-Maruyama on the grid (Kloeden &
Platen 1992, eq. 9.1.3): ``X_{n+1} = X_n + b dt_n + sigma sqrt(dt_n) eps_n``.

Fractional noise. With ``noise=ppl.fbm(hurst, num_ou=K)`` the driving noise is the Markov
approximation of fractional Brownian motion (MA-fBM) of Daems, Opper, Crevecoeur & Birdal,
"Variational inference for SDEs driven by fractional noise" (ICLR 2024): ``B^H(t) ~
sum_k omega_k (Y_k(t) - Y_k(0))``, ``dY_k = -gamma_k Y_k dt + dW`` with one shared W
(their eq. 7-9), speeds on a geometric grid and weights ``omega(H)`` from the
least-squares problem of their Prop. 5 (:mod:`ppl.semantics.mafbm`). The SDE is Markov in
the augmented state ``(X, Y_1..Y_K)`` (their eq. 11):

    dX  = [b(t, X) - sigma(t, X) sum_k omega_k gamma_k Y_k] dt + sigma(t, X) (sum_k omega_k) dW
    dY_k = -gamma_k Y_k dt + dW,

simulated by Euler-Maruyama on the same grid. Type II (Riemann-Liouville) starts at
``Y(0) = 0``; type I (Mandelbrot-van Ness) draws ``Y(0)`` from the stationary law
``N(0, C)``, ``C_ij = 1 / (gamma_i + gamma_j)``, as the latent site ``f"{name}_y0"`` of
shape ``x0.shape + (K,)``. Each coordinate of X has its own (independent) fBM.

Shapes. ``x0`` is a scalar or an array; ``drift(t, x, params)`` returns ``x``'s shape and
``diffusion(t, x, params)`` something that broadcasts to it (diagonal noise: one driving
noise per coordinate). ``params`` is any pytree the program passes in (often a dict of
``ppl.sample`` or ``ppl.param`` values); it is handed unchanged to drift and diffusion.

Step size. Euler on the OU components is stable and accurate only when the fastest speed is
resolved: the primitive requires ``gamma_max * dt < 0.5`` on every step (a clear
:class:`ValueError` otherwise), whenever ``times`` is concrete (it is checked when the
program runs outside ``jit``; :func:`ppl.inference.variational_sde.vsde` always runs it so once).
By default ``fbm(hurst)`` chooses the speeds from the grid
(:func:`ppl.semantics.mafbm.grid_defaults`: ``gamma_max = 0.25 / max(dt)``, from ``1/(10 T)``,
two per decade), which needs a concrete ``times``; a hand-set ``num_ou``/``gamma_max`` whose
increment covariance on the grid is more than 10% off the exact fBM's (at the given Hurst
index, or at 0.3 and 0.7 when it is traced) gets a warning with that figure
(:func:`approximation_error`).

Control. :mod:`ppl.inference.variational_sde` fits a posterior over paths by running the program
with a *controller* installed (:func:`controlled`): the primitive then simulates under a control
``u(t, state, context)`` that shifts the noise (``dW -> dW + u dt``, Girsanov), records the
realised standardised increments ``(dW + u dt) / sqrt(dt)`` as the value of the noise site
(so the recorded trace is a valid prior trace of the same path) and reports the Girsanov
cost ``1/2 int |u|^2 dt`` and the log importance weight of the path to the controller.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ppl.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    ShapeMismatchError,
    UnknownOptionError,
    check_number,
)

__all__ = [
    "FBM",
    "SDE_TAG",
    "Brownian",
    "Simulation",
    "brownian",
    "controlled",
    "euler_maruyama",
    "fbm",
    "sde",
]

#: ``site["infer"][SDE_TAG]`` on the noise site of an sde holds its metadata (a dict).
SDE_TAG = "ppl_sde"
#: The largest allowed ``gamma_max * dt`` (Daems et al. 2024 resolve the fastest OU speed).
MAX_SPEED_STEP = 0.5

_CONTROLLERS: list = []


# --------------------------------------------------------------------------- noise specs


class Brownian(NamedTuple):
    """Standard Brownian driving noise (the default of :func:`sde`)."""


class FBM(NamedTuple):
    """Markov-approximate fractional Brownian driving noise; see :func:`fbm`. ``num_ou``
    and ``gamma_max`` are None until :func:`sde` chooses them from its grid."""

    hurst: object
    num_ou: int | None
    gamma_max: float | None
    kind: str
    gamma_min: float | None = None


def brownian() -> Brownian:
    """Brownian driving noise W for :func:`sde`."""
    return Brownian()


def fbm(hurst, num_ou: int | None = None, gamma_max: float | None = None,
        kind: str = "II") -> FBM:
    """Fractional Brownian driving noise of Hurst index ``hurst`` for :func:`sde`.

    Approximated by ``num_ou`` Ornstein-Uhlenbeck processes with speeds on a geometric grid
    up to ``gamma_max`` (Daems et al., ICLR 2024, eq. 7-9 and Prop. 5). ``kind`` is ``"II"``
    (Riemann-Liouville, Y(0) = 0) or ``"I"`` (Mandelbrot-van Ness, stationary Y(0)).
    ``hurst`` may be a float or a value from a ``ppl.param`` / ``ppl.sample`` site (it is
    traced and differentiable: the weights are re-solved from it each run).

    By default (``num_ou=None``, ``gamma_max=None``) :func:`sde` picks the speeds from its
    time grid (:func:`ppl.semantics.mafbm.grid_defaults`): geometric from ``1/(10 T)`` to
    ``0.25 / max(dt)``, two per decade (K = 8 on [0, 4] with dt = 0.005); ``num_ou``
    alone keeps that range with K speeds. With ``gamma_max`` given the grid is the paper's,
    ``1/gamma_max..gamma_max`` (K = 5 unless given), and :func:`sde` warns when its
    increment covariance on the grid is more than 10% off the exact fBM's.
    """
    if kind not in ("I", "II"):
        raise UnknownOptionError(f"unknown fbm kind={kind!r}; choose one of ['I', 'II']")
    if num_ou is not None:
        _check_num_ou(num_ou)
        num_ou = int(num_ou)
    _check_hurst_arg(hurst)
    if gamma_max is None:
        return FBM(hurst, num_ou, None, kind)
    # the grid spans 1/gamma_max..gamma_max
    gamma_max = check_number("fbm: gamma_max", gamma_max, low=1.0, low_open=True)
    return FBM(hurst, 5 if num_ou is None else num_ou, gamma_max, kind)


def _check_num_ou(num_ou):
    if isinstance(num_ou, bool) or not isinstance(num_ou, (int, np.integer)):
        raise ArgumentTypeError(f"fbm: num_ou must be an integer >= 2, got {num_ou!r}")
    if num_ou < 2:
        raise InvalidArgumentError(f"fbm: num_ou must be an integer >= 2, got {num_ou!r}")


def _check_hurst_arg(hurst):
    if not isinstance(hurst, jax.core.Tracer):
        if isinstance(hurst, (bool, str, bytes)) or hurst is None:
            raise ArgumentTypeError(f"fbm: hurst must be a scalar in (0, 1), got {hurst!r}")
        h = np.asarray(hurst)
        if h.shape != () or not 0.0 < float(h) < 1.0:
            raise InvalidArgumentError(f"fbm: hurst must be a scalar in (0, 1), got {hurst!r}")


#: ``sde`` warns when the increment covariance error of a hand-set MA-fBM is above this.
APPROXIMATION_WARNING = 0.10


def _resolve_fbm(name: str, noise: FBM, times) -> FBM:
    """``noise`` with its speeds fixed: chosen from the concrete grid ``times`` when not
    given (:func:`ppl.semantics.mafbm.grid_defaults`); a traced grid needs them given."""
    if noise.gamma_max is not None:
        return noise
    from ppl.semantics.mafbm import grid_defaults

    concrete = _concrete(times)
    if concrete is None:
        raise InvalidArgumentError(
            f"sde('{name}'): noise=fbm(...) without num_ou/gamma_max chooses the OU speeds "
            "from times, which must then be concrete (not traced); pass num_ou and gamma_max"
        )
    num_ou, gamma_min, gamma_max = grid_defaults(concrete)
    return noise._replace(num_ou=num_ou if noise.num_ou is None else noise.num_ou,
                          gamma_max=gamma_max, gamma_min=gamma_min)


def approximation_error(noise: FBM, times, hurst=None) -> float:
    """Relative error of the MA-fBM increment covariance of ``noise`` on the grid ``times``
    against the exact fBM's (:func:`ppl.semantics.mafbm.increment_covariance_error`), at
    ``hurst`` (default: the noise's own, which must then be concrete)."""
    from ppl.semantics.mafbm import increment_covariance_error, weights_and_derivative

    noise = _resolve_fbm("sde", noise, times)
    h = float(np.asarray(noise.hurst if hurst is None else hurst, dtype=np.float64))
    t = np.asarray(times, dtype=np.float64)
    if noise.gamma_min is not None:
        gammas = np.geomspace(noise.gamma_min, noise.gamma_max, noise.num_ou)
    else:  # the paper's grid (geometric_speeds), in numpy: this also runs while tracing
        k = np.arange(1, noise.num_ou + 1)
        gammas = noise.gamma_max ** ((2.0 * k - (noise.num_ou + 1)) / (noise.num_ou - 1))
    omega, _ = weights_and_derivative(h, gammas, t[-1] - t[0], noise.kind, derivative=False)
    return increment_covariance_error(h, gammas, omega, t, noise.kind)


def _speeds(noise: FBM, dtype):
    from ppl.semantics.mafbm import geometric_speeds

    return jnp.asarray(geometric_speeds(noise.num_ou, noise.gamma_max, noise.gamma_min), dtype)


# --------------------------------------------------------------------------- checks


def _concrete(x):
    """``np.asarray(x)``, or None when ``x`` is traced (inside jit)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_times(name: str, times, noise) -> jax.Array:
    """The time grid as an array; raise naming ``times`` if it is not a strictly increasing
    1-D grid of >= 2 points or (fractional noise) if a step is too long for gamma_max."""
    times_arr = jnp.asarray(times)
    if times_arr.ndim != 1 or times_arr.shape[0] < 2:
        raise ShapeMismatchError(
            f"sde('{name}'): times must be a 1-D grid of at least 2 time points, got shape "
            f"{tuple(times_arr.shape)}"
        )
    if not jnp.issubdtype(times_arr.dtype, jnp.floating):
        times_arr = times_arr.astype(jnp.result_type(float))
    concrete = _concrete(times)
    if concrete is not None:
        steps = np.diff(concrete.astype(np.float64))
        if not np.all(steps > 0):
            raise InvalidArgumentError(f"sde('{name}'): times must be strictly increasing")
        if isinstance(noise, FBM) and noise.gamma_max * steps.max() >= MAX_SPEED_STEP:
            raise InvalidArgumentError(
                f"sde('{name}'): times has a step dt = {steps.max():.4g} too long for the "
                f"fastest OU speed gamma_max = {noise.gamma_max:g} of noise=fbm(...): need "
                f"gamma_max * dt < {MAX_SPEED_STEP} (a finer times grid, or a smaller "
                f"gamma_max)"
            )
    return times_arr


def _check_output(name: str, which: str, value, shape, exact: bool):
    value = jnp.asarray(value)
    ok = value.shape == shape if exact else _broadcasts(value.shape, shape)
    if not ok:
        want = f"shape {shape}" if exact else f"a shape that broadcasts to {shape}"
        raise ShapeMismatchError(
            f"sde('{name}'): {which}(t, x, params) returned shape {value.shape}; it must "
            f"return {want} (the shape of x0)"
        )
    return jnp.broadcast_to(value, shape)


def _broadcasts(a, b) -> bool:
    try:
        return np.broadcast_shapes(a, b) == tuple(b)
    except ValueError:
        return False


# --------------------------------------------------------------------------- simulation


class Simulation(NamedTuple):
    """The result of :func:`euler_maruyama`: the path and what a controller needs."""

    path: jax.Array  #: (N + 1,) + x0.shape, path[0] = x0
    noise: jax.Array  #: (N,) + x0.shape, realised standardised increments dW_n / sqrt(dt_n)
    ou: jax.Array | None  #: (N + 1,) + x0.shape + (K,) OU states (fractional noise) or None
    girsanov: jax.Array  #: the path's KL: sum_n 1/2 |u_n|^2 dt_n at unit scale (0 without control)
    log_weight: jax.Array  #: log p(noise) - log q(noise) of the realised increments
    hurst: jax.Array | None = None  #: the Hurst index of fractional noise (None: Brownian)


def _flat_state(x, y):
    """The augmented Markov state (X, Y_1..Y_K) as one flat vector (the control's input)."""
    if y is None:
        return jnp.ravel(x)
    return jnp.concatenate([jnp.ravel(x), jnp.ravel(y)])


def euler_maruyama(name, drift, diffusion, x0, times, eps, params=None, omega=None,
                   gammas=None, y0=None, control=None, context=None) -> Simulation:
    """Euler-Maruyama for ``dX = b dt + sigma dW`` (``omega is None``) or, with MA-fBM noise,
    for the augmented system of Daems et al. (ICLR 2024, eq. 11), in one ``lax.scan``.

    ``eps`` (N,) + x0.shape are standard-normal draws. Without ``control``,
    ``dW_n = sqrt(dt_n) eps_n``. With ``control(t, state, context)`` (state: the flat
    augmented state, see :func:`_flat_state`), the increments are shifted,
    ``dW_n = u_n dt_n + sqrt(dt_n) eps_n`` (the Euler discretisation of Girsanov's change of
    drift), the Girsanov cost ``sum_n 1/2 |u_n|^2 dt_n`` and the log importance weight
    ``sum_n [-u_n sqrt(dt_n) eps_n - 1/2 |u_n|^2 dt_n]`` (= log N(e; 0, 1) - log N(e; u
    sqrt(dt), 1) at the realised e = dW / sqrt(dt)) are carried as extra scan states.

    A control may also return ``(u, log_scale)``: the standardised increment is then
    ``e = u sqrt(dt) + exp(log_scale) eps`` and the per-step cost the exact Gaussian KL
    ``1/2 [u^2 dt + s^2 - 1 - log s^2]`` (beyond the paper: in discrete time this lets the
    guide shrink each increment's variance, which the continuous-time Girsanov family
    cannot and does not need to do; as dt -> 0 the optimal s -> 1).
    """
    x0 = jnp.asarray(x0)
    shape = x0.shape
    dts = jnp.diff(times)
    fractional = omega is not None
    if fractional:
        omega_sum = jnp.sum(omega)
        omega_gamma = omega * gammas
        y_init = jnp.zeros(shape + (gammas.shape[0],), x0.dtype) if y0 is None else y0
    else:
        y_init = None
    # check the user functions' output shapes once, at trace time
    _check_output(name, "drift", drift(times[0], x0, params), shape, exact=True)
    _check_output(name, "diffusion", diffusion(times[0], x0, params), shape, exact=False)

    def step(carry, inputs):
        x, y, cost, log_w = carry
        t, dt, e = inputs
        b = drift(t, x, params)
        s = jnp.broadcast_to(diffusion(t, x, params), shape)
        sqrt_dt = jnp.sqrt(dt)
        u, log_scale = _evaluate_control(control, t, _flat_state(x, y), context, shape, x.dtype)
        scale = jnp.exp(log_scale)
        e_used = u * sqrt_dt + scale * e  # the realised standardised increment
        dw = sqrt_dt * e_used
        if fractional:
            x_new = x + (b - s * jnp.sum(omega_gamma * y, -1)) * dt + s * omega_sum * dw
            y_new = y - gammas * y * dt + dw[..., None]
        else:
            x_new = x + b * dt + s * dw
            y_new = None
        # KL(N(u sqrt(dt), scale^2) || N(0, 1)) per step: Girsanov's 1/2 u^2 dt at scale 1
        cost = cost + 0.5 * jnp.sum(u**2 * dt + scale**2 - 1.0 - 2.0 * log_scale)
        # log N(e_used; 0, 1) - log N(e_used; u sqrt(dt), scale^2)
        log_w = log_w + jnp.sum(-0.5 * e_used**2 + 0.5 * e**2 + log_scale)
        return (x_new, y_new, cost, log_w), (x_new, y_new, e_used)

    zero = jnp.zeros((), x0.dtype)
    init = (x0, y_init, zero, zero)
    (_, _, cost, log_w), (xs, ys, noise) = jax.lax.scan(step, init, (times[:-1], dts, eps))
    path = jnp.concatenate([x0[None], xs])
    ou = jnp.concatenate([y_init[None], ys]) if fractional else None
    return Simulation(path, noise, ou, cost, log_w)


def _evaluate_control(control, t, state, context, shape, dtype):
    """``(u, log_scale)`` of a control (zeros without one), broadcast to the state's shape."""
    zeros = jnp.zeros(shape, dtype)
    if control is None:
        return zeros, zeros
    out = control(t, state, context)
    if isinstance(out, tuple):
        u, log_scale = out
        return jnp.broadcast_to(u, shape), jnp.broadcast_to(log_scale, shape)
    return jnp.broadcast_to(out, shape), zeros


# --------------------------------------------------------------------------- fractional


def _fractional_noise(name: str, noise: FBM, times, shape, dtype):
    """Speeds, weights omega(H) and the initial OU state (a latent site for type I)."""
    try:
        from ppl.semantics.mafbm import mafbm_weights, stationary_covariance
    except ImportError as err:  # pragma: no cover - until semantics/mafbm.py lands
        raise NotImplementedError(
            f"sde('{name}'): noise=fbm(...) needs ppl.semantics.mafbm, which is missing"
        ) from err
    gammas = _speeds(noise, dtype)
    horizon = times[-1] - times[0]
    omega = jnp.asarray(mafbm_weights(noise.hurst, gammas, horizon, kind=noise.kind), dtype)
    if noise.kind == "II":
        return gammas, omega, None
    cov = jnp.asarray(stationary_covariance(gammas), dtype)
    law = dist.MultivariateNormal(jnp.zeros(noise.num_ou, dtype), covariance_matrix=cov)
    if shape:
        law = law.expand(shape).to_event(len(shape))
    y0 = numpyro.sample(f"{name}_y0", law)
    return gammas, omega, y0


_WARNED: set = set()


def _warn_approximation(name: str, noise: FBM, times):
    """Warn (once per grid and noise) when the MA-fBM is coarse on this grid: the
    increment covariance error above :data:`APPROXIMATION_WARNING`, at the noise's Hurst
    index when concrete (else at 0.3 and 0.7). For hand-set speeds the warning points to
    the grid's defaults; for grid-chosen ones (whose fastest speed the grid step bounds) to
    a finer grid."""
    concrete = _concrete(times)
    if concrete is None:
        return
    h = _concrete(noise.hurst) if not isinstance(noise.hurst, jax.core.Tracer) else None
    hursts = (float(h),) if h is not None and h.shape == () else (0.3, 0.7)
    key = (tuple(np.asarray(concrete, np.float64)[[0, 1, -1]]), concrete.shape[0],
           noise.num_ou, noise.gamma_max, noise.kind, hursts)
    if key in _WARNED:
        return
    _WARNED.add(key)
    errors = [approximation_error(noise, concrete, hurst) for hurst in hursts]
    worst = int(np.argmax(errors))
    if errors[worst] > APPROXIMATION_WARNING:
        import warnings

        figure = (f"approximates the fBM increments on this grid with a "
                  f"{100 * errors[worst]:.0f}% relative covariance error at H = "
                  f"{hursts[worst]:g}, which can bias a learned Hurst index")
        if noise.gamma_min is None:
            from ppl.semantics.mafbm import grid_defaults

            num_ou, _, gamma_max = grid_defaults(concrete)
            advice = (f"leave num_ou and gamma_max unset to choose them from the grid (here "
                      f"K = {num_ou}, gamma_max = {gamma_max:.3g})")
            what = f"fbm(num_ou={noise.num_ou}, gamma_max={noise.gamma_max:g})"
        else:
            step = float(np.max(np.diff(np.asarray(concrete, np.float64))))
            advice = (f"its fastest speed is bounded by the grid step ({step:g}); a finer "
                      f"time grid (a smaller step) resolves rougher paths")
            what = f"the grid's MA-fBM (K = {noise.num_ou}, gamma_max = {noise.gamma_max:.3g})"
        warnings.warn(f"sde('{name}'): {what} {figure}; {advice}", UserWarning, stacklevel=3)


# --------------------------------------------------------------------------- controllers


@contextlib.contextmanager
def controlled(controller):
    """Within the block, every :func:`sde` simulates under ``controller``.

    ``controller.control(name)`` returns the control ``u(t, state, context)`` of the sde
    site ``name`` (or None for the prior), ``controller.context`` the context passed to it,
    and ``controller.report(name, simulation)`` receives the :class:`Simulation`.
    """
    _CONTROLLERS.append(controller)
    try:
        yield controller
    finally:
        _CONTROLLERS.pop()


# --------------------------------------------------------------------------- the primitive


def sde(name: str, drift, diffusion, x0, times, noise=None, params=None):
    """A latent SDE path ``dX = drift(t, X, params) dt + diffusion(t, X, params) dB`` on the
    grid ``times``, recorded as the deterministic site ``name``; returns the path, shape
    ``(len(times),) + x0.shape`` with ``path[0] = x0``.

    ``noise`` is :func:`brownian` (default) or :func:`fbm`. The standard-normal increments
    are the latent site ``f"{name}_noise"`` (and, for type I fBM, the initial OU state
    ``f"{name}_y0"``); see the module docstring for the scheme, shapes and checks.
    """
    noise = Brownian() if noise is None else noise
    if not isinstance(noise, (Brownian, FBM)):
        raise ArgumentTypeError(
            f"sde('{name}'): noise must be ppl.brownian() or ppl.fbm(hurst, num_ou=K), got "
            f"{noise!r}"
        )
    if isinstance(noise, FBM):
        noise = _resolve_fbm(name, noise, times)
    times = _check_times(name, times, noise)
    if isinstance(noise, FBM):
        _warn_approximation(name, noise, times)
    x0 = jnp.asarray(x0, dtype=jnp.result_type(times.dtype, jnp.asarray(x0).dtype))
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(times.dtype)
    shape = x0.shape
    num_steps = times.shape[0] - 1
    fractional = isinstance(noise, FBM)
    if fractional:
        gammas, omega, y0 = _fractional_noise(name, noise, times, shape, x0.dtype)
    else:
        gammas = omega = y0 = None
    noise_shape = (num_steps,) + shape
    law = dist.Normal(jnp.zeros((), x0.dtype), 1.0).expand(noise_shape).to_event(len(noise_shape))
    meta = {
        "name": name,
        "shape": shape,
        "num_ou": noise.num_ou if fractional else 0,
        "times": times,
        "fbm": noise._replace(hurst=None) if fractional else None,
    }
    controller = _CONTROLLERS[-1] if _CONTROLLERS else None
    if controller is None:
        eps = numpyro.sample(f"{name}_noise", law, infer={SDE_TAG: meta})
        sim = euler_maruyama(name, drift, diffusion, x0, times, eps, params, omega, gammas, y0)
    else:
        eps = jax.random.normal(numpyro.prng_key(), noise_shape, x0.dtype)
        sim = euler_maruyama(name, drift, diffusion, x0, times, eps, params, omega, gammas, y0,
                             control=controller.control(name), context=controller.context)
        with numpyro.handlers.substitute(data={f"{name}_noise": sim.noise}):
            numpyro.sample(f"{name}_noise", law, infer={SDE_TAG: meta})
        if fractional:
            sim = sim._replace(hurst=jnp.asarray(noise.hurst, x0.dtype))
        controller.report(name, sim)
    return numpyro.deterministic(name, sim.path)
