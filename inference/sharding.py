"""Particles spread across devices: a 1-D device mesh and sharding constraints on the
leading particle axis.

SMC is data-parallel over particles: :func:`ppl.inference.engine.propagate` is a ``vmap`` over
the N particles, so cutting the particle axis into ``D`` equal blocks, one per device, runs
each device's ``N / D`` particles in parallel (the "parallel particle filter" of Lee,
Yau, Giles, Doucet & Holmes 2010, *On the utility of graphics cards to perform massively
parallel simulation of advanced Monte Carlo methods*, JCGS 19(4), section 3). Only the
normalisation of the weights (a ``logsumexp``) and resampling (a cumulative sum and a
gather of ancestors) need every particle.

Exact equality: a sharded run is bitwise the unsharded run of the same key (particles,
ancestors, weights, evidence). The per-particle keys do not depend on the layout
(:func:`ppl.inference.engine.particle_key` uses the global particle index), and the
weights, N floats, are kept whole on every device (``PartitionSpec()``): the engine
gathers them before they are normalised and before resampling (:func:`replicate`), so the
``logsumexp`` and the cumulative sum run in a single device's order. Split across devices
instead, the cumulative sum would be per-device partial sums plus offsets, which round
differently; a point ``(j + U) / N`` of the systematic grid then falls between the two
runs' cumulative weights with probability about ``N * sum_i |C_i - C'_i|``, which grows as
``N^2`` (measured on 4 host devices: in 1% of resamplings at N = 400, 37% at N = 4000,
every one at N = 40000), one ancestor moves by one, and
from that step on the two runs are different (equally valid) SMC runs. Keeping the weights
whole costs an all-gather of N floats per step, and on 4 host devices it was faster than
the split cumulative sum and ``searchsorted`` (README, "Several devices and hosts").
Summaries that sum over particles without feeding back into them (filter means, MH
acceptance rates) are still reduced across devices and may differ in the last bits.

The mechanics are ``jax.sharding``'s (see the JAX guide *Distributed arrays and automatic
parallelization*):

* :func:`particle_mesh` — a 1-D :class:`jax.sharding.Mesh` over the devices, axis name
  ``"particles"``;
* :func:`shard_particles` — inside the jitted code, :func:`jax.lax.with_sharding_constraint`
  with ``NamedSharding(mesh, PartitionSpec("particles"))`` on every leaf of a particle
  pytree that has a leading particle axis; scalars are replicated, and so is the
  ``log_weights`` field of a population (:class:`ppl.inference.engine.ParticleState`). The
  engine's time driver (:func:`ppl.inference.engine.run_particles`) calls it on the
  particle state after initialisation, at the start of every step
  (:func:`ppl.inference.engine.smc_step`: a constraint at the end of a ``lax.scan`` body
  does not fix the sharding the next iteration reads) and after every step, so the
  partitioner keeps the particles sharded through the whole ``lax.scan``;
* :func:`replicate` — the same constraint with ``PartitionSpec()``: whole on every device
  (the new log potentials before normalisation, and G0);
* :func:`to_host` — fetch a result whose arrays span devices of several processes
  (multi-host runs) so it can be read with NumPy on every process.

Divisibility: ``num_particles`` must be a multiple of the number of devices in the mesh
(each device holds an equal block). This module raises a :class:`ValueError` naming
``num_particles`` otherwise, rather than silently falling back to replication: a run
asked to be spread over devices that quietly is not would be a performance bug that is hard
to see. Pick ``num_particles`` as a multiple of ``jax.device_count()``.

Several hosts: call ``jax.distributed.initialize()`` in every process before building the
mesh; ``jax.devices()`` then lists the devices of all processes, and a mesh built from it
(``devices="all"``) spans them. See the README section "Several devices and hosts".
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ppl.errors import InvalidArgumentError, UnknownOptionError

__all__ = ["PARTICLE_AXIS", "check_divisible", "particle_mesh", "replicate", "shard_particles",
           "to_host"]

#: Name of the mesh axis the particle axis is split along.
PARTICLE_AXIS = "particles"


def particle_mesh(devices=None) -> Mesh:
    """A 1-D device mesh with axis name ``"particles"``.

    ``devices``: ``None`` or ``"all"`` — every device JAX sees (``jax.devices()``: across
    all processes after ``jax.distributed.initialize()``); or a non-empty sequence of
    :class:`jax.Device`. The particle axis is cut into ``len(devices)`` equal blocks, block
    ``d`` on ``devices[d]``.
    """
    if devices is None or (isinstance(devices, str) and devices == "all"):
        devices = jax.devices()
    elif isinstance(devices, str) or not isinstance(devices, Sequence):
        raise UnknownOptionError(
            f"devices must be 'all', None or a list of jax devices (e.g. jax.devices()[:2]), "
            f"got {devices!r}"
        )
    devices = list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise InvalidArgumentError(
            f"devices must be a non-empty list of jax devices (e.g. jax.devices()[:2]), "
            f"got {devices!r}"
        )
    if len(set(devices)) != len(devices):
        raise InvalidArgumentError(f"devices lists a device more than once: {devices!r}")
    return Mesh(np.array(devices, dtype=object), (PARTICLE_AXIS,))


def check_divisible(num_particles: int, mesh: Mesh) -> int:
    """Raise :class:`~ppl.errors.InvalidArgumentError` (a ``ValueError``) naming
    ``num_particles`` unless it is a multiple of the
    number of devices of ``mesh`` (each device holds ``num_particles / D`` particles)."""
    num_devices = mesh.devices.size
    if num_particles % num_devices:
        lower = num_particles - num_particles % num_devices
        raise InvalidArgumentError(
            f"num_particles={num_particles} must be a multiple of the number of devices the "
            f"particles are sharded across ({num_devices}); use e.g. num_particles="
            f"{max(lower, num_devices)} or {lower + num_devices}, or devices=None (no sharding)"
        )
    return num_particles


def shard_particles(tree, mesh: Mesh | None):
    """Constrain every leaf of ``tree`` with a leading particle axis to be split along the
    mesh's ``"particles"`` axis; 0-d leaves are replicated, and so are the ``log_weights``
    of a population (a NamedTuple with that field, such as
    :class:`ppl.inference.engine.ParticleState`): the N weights are whole on every device,
    so their normalisation and resampling's cumulative sum are those of one device (see
    the module docstring). ``mesh=None``: ``tree`` is returned unchanged (no constraint at
    all).

    Meant to be called inside ``jax.jit`` (it is :func:`jax.lax.with_sharding_constraint`,
    which outside ``jit`` moves the data). Every non-scalar leaf must have the same leading
    size N, a multiple of the number of devices (:func:`check_divisible`). Under ``vmap``
    (e.g. replicate runs or PMMH chains) the vmapped axis is left unconstrained and the
    particle axis is still the one split.
    """
    if mesh is None:
        return tree
    if _is_population(tree):
        # the weight vector is replicated (see the module docstring: exact equality)
        rest = shard_particles(tree._replace(log_weights=None), mesh)
        return rest._replace(log_weights=replicate(tree.log_weights, mesh))
    leaves = jax.tree.leaves(tree)
    sizes = {np.shape(leaf)[0] for leaf in leaves if np.ndim(leaf) > 0}
    if len(sizes) > 1:
        raise ValueError(
            f"shard_particles: the leaves have different leading (particle) axis sizes "
            f"{sorted(sizes)}; every non-scalar leaf must lead with the num_particles axis"
        )
    for num_particles in sizes:
        check_divisible(num_particles, mesh)
    split = NamedSharding(mesh, PartitionSpec(PARTICLE_AXIS))
    replicated = NamedSharding(mesh, PartitionSpec())

    def constrain(leaf):
        sharding = split if np.ndim(leaf) > 0 else replicated
        return jax.lax.with_sharding_constraint(leaf, sharding)

    return jax.tree.map(constrain, tree)


def _is_population(tree) -> bool:
    """A particle population (:class:`ppl.inference.engine.ParticleState`, or any
    NamedTuple with a ``log_weights`` field) whose weights are an array."""
    fields = getattr(type(tree), "_fields", ())
    return "log_weights" in fields and getattr(tree, "log_weights", None) is not None


def replicate(x, mesh: Mesh | None):
    """``x`` (any pytree) constrained to be whole on every device of ``mesh``
    (``PartitionSpec()``); ``mesh=None``: unchanged. Inside ``jit``, an all-gather of a
    sharded ``x``, after which each device computes on the whole of it, in the order a
    single device would."""
    if mesh is None:
        return x
    whole = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda leaf: jax.lax.with_sharding_constraint(leaf, whole), x)


def to_host(tree):
    """``tree`` with every array that spans devices of other processes gathered into a
    NumPy array on this process (:func:`jax.experimental.multihost_utils.process_allgather`,
    tiled); everything else is returned as is. A no-op in a single process, where every
    array is fully addressable."""

    def fetch(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            from jax.experimental import multihost_utils

            return multihost_utils.process_allgather(leaf, tiled=True)
        return leaf

    return jax.tree.map(fetch, tree)
