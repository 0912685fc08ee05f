"""Particles sharded across devices (inference/sharding.py and SMC's ``devices=`` option).

The main check runs in a child process with 4 virtual CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``; the device count is fixed when
JAX starts, so it cannot be changed in this process). There SMC on the 1-D linear-Gaussian
SSM, N = 4000, runs once with ``devices="all"`` and once with ``devices=None`` for the same
key, each as one ``jax.jit``. Sharding changes where particles live, not what is computed:
the log evidence, the weights, the genealogy and the particle paths must be bitwise equal.
N = 4000 matters: the weights are whole on every device (``PartitionSpec()``) for their
normalisation and resampling's cumulative sum; were the cumulative sum split across the
devices (per-device partial sums plus offsets, a different rounding), a point of the
systematic grid lands between the two runs' cumulative weights somewhere in these 15 steps
at N = 4000 (the expected number of such flips grows as N^2), an ancestor moves by one,
and the runs part (paths differing by 2.5) -- at N = 400 they happened not to. And the
sharded run must really be sharded: its particles are split 4 x 1000 along the mesh axis
"particles", whereas the unsharded run's live on one device (the check that fails if the
constraint were dropped).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.inference.sharding import check_divisible, particle_mesh, shard_particles, to_host

from ppl import inference as infer
from ppl import models as zoo

CHILD = textwrap.dedent(
    """
    import json, time
    t0 = time.time()
    import jax, numpy as np
    from jax.sharding import PartitionSpec
    from ppl import inference as infer, models as zoo

    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), 15)
    key = jax.random.PRNGKey(20261128)
    outs = {}
    for name, devices in (("sharded", "all"), ("plain", None)):
        algo = infer.smc(4000, devices=devices)
        run = jax.jit(lambda k, ys, algo=algo: algo.core(k, zoo.lgssm_1d, (ys,), {}))
        outs[name] = jax.block_until_ready(run(key, ys))
    a, b = outs["sharded"], outs["plain"]
    xs = a.steps.values["x"].sharding
    try:
        infer.smc(4002, devices="all")
        error = ""
    except ValueError as e:
        error = str(e)
    print(json.dumps({
        "device_count": jax.device_count(),
        "spec": str(getattr(xs, "spec", None)),
        "spec_ok": getattr(xs, "spec", None) == PartitionSpec(None, "particles"),
        "shards": sorted([list(s.data.shape) for s in a.steps.values["x"].addressable_shards]),
        "shard_devices": len({s.device for s in a.steps.values["x"].addressable_shards}),
        "weights_spec": str(getattr(a.log_weights.sharding, "spec", None)),
        "weights_whole": getattr(a.log_weights.sharding, "spec", None) == PartitionSpec(),
        "plain_devices": len(b.log_weights.sharding.device_set),
        "log_evidence": [float(a.log_evidence), float(b.log_evidence)],
        "resampled": int(np.asarray(b.steps.resampled).sum()),
        "equal": {name: bool(np.array_equal(np.asarray(u), np.asarray(v)))
                  for name, u, v in (
                      ("log_evidence", a.log_evidence, b.log_evidence),
                      ("log_evidence_init", a.log_evidence_init, b.log_evidence_init),
                      ("log_weights", a.log_weights, b.log_weights),
                      ("step_log_weights", a.steps.log_weights, b.steps.log_weights),
                      ("paths", a.paths["x"], b.paths["x"]),
                      ("particles", a.steps.values["x"], b.steps.values["x"]),
                      ("ancestors", a.steps.ancestors, b.steps.ancestors))},
        "error": error,
        "seconds": time.time() - t0,
    }))
    """
)


def test_smc_particles_sharded_over_four_devices_same_answer():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(r)
    assert r["device_count"] == 4
    # really sharded: 4 blocks of 1000 particles (x 15 steps) on 4 devices, along
    # "particles"; the weight vector is whole on every device
    assert r["spec_ok"], r["spec"]
    assert r["shards"] == [[15, 1000]] * 4
    assert r["shard_devices"] == 4
    assert r["weights_whole"], r["weights_spec"]
    assert r["plain_devices"] == 1  # devices=None: no constraint, one device as before
    # the same run, bit for bit (and it resampled, so the genealogy was exercised)
    assert np.isfinite(r["log_evidence"][1])
    assert r["resampled"] >= 5
    assert all(r["equal"].values()), r
    # N not a multiple of the device count: a clear error naming num_particles
    assert "num_particles=4002" in r["error"] and "multiple" in r["error"]


def test_particle_mesh_and_bad_devices():
    mesh = particle_mesh()
    assert mesh.axis_names == ("particles",)
    assert mesh.devices.size == jax.device_count()
    assert particle_mesh("all").devices.size == jax.device_count()
    assert particle_mesh(jax.devices()[:1]).devices.size == 1
    with pytest.raises(ValueError, match="devices"):
        particle_mesh("gpus")
    with pytest.raises(ValueError, match="devices"):
        particle_mesh([])
    with pytest.raises(ValueError, match="devices"):
        particle_mesh(["cpu:0"])
    with pytest.raises(ValueError, match="devices"):
        infer.smc(8, devices=3)


def test_shard_particles_no_mesh_is_identity_and_checks_leading_axes():
    tree = {"a": jnp.ones((8, 2)), "b": jnp.zeros(()), "c": (jnp.arange(8),)}
    assert shard_particles(tree, None) is tree
    mesh = particle_mesh(jax.devices()[:1])
    out = jax.jit(lambda t: shard_particles(t, mesh))(tree)
    for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(tree), strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="leading"):
        jax.jit(lambda t: shard_particles(t, mesh))({"a": jnp.ones(8), "b": jnp.ones(3)})
    assert check_divisible(8, mesh) == 8
    assert to_host(tree) is not None
    np.testing.assert_array_equal(to_host(tree)["a"], tree["a"])


RMSMC_CHILD = textwrap.dedent(
    """
    import json
    import jax, numpy as np
    from ppl import inference as infer, models as zoo

    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), 8)
    key = jax.random.PRNGKey(20261128)
    outs = {}
    for name, devices in (("sharded", "all"), ("plain", None)):
        algo = infer.smc(64, move=infer.mh(num_mcmc_steps=1), devices=devices)
        outs[name] = algo.run(key, zoo.lgssm_1d_unknown_rho, ys)
    a, b = outs["sharded"], outs["plain"]
    print(json.dumps({
        "log_evidence": [float(a.log_evidence), float(b.log_evidence)],
        "max_diff_x": float(np.abs(np.asarray(a.samples["x"])
                                   - np.asarray(b.samples["x"])).max()),
        "max_diff_rho": float(np.abs(np.asarray(a.samples["rho"])
                                     - np.asarray(b.samples["rho"])).max()),
        "accept": [a.info["accept_rate"], b.info["accept_rate"]],
    }))
    """
)


@pytest.mark.slow
def test_resample_move_particles_sharded_over_four_devices_same_answer():
    """Resample-move SMC with ``devices="all"`` (``smc(..., move=infer.mh(...))``) over four
    host devices: the particles and their paths are split across devices, and the run is
    the unsharded run's, bit for bit (the acceptance rate, a mean over particles reduced
    across devices, to rounding)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", RMSMC_CHILD], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["log_evidence"][0] == out["log_evidence"][1], out
    assert out["max_diff_x"] == 0.0 and out["max_diff_rho"] == 0.0, out
    assert out["accept"][0] == pytest.approx(out["accept"][1], abs=1e-6)


MULTIHOST_CHILD = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    import numpy as np
    from ppl import inference as infer, models as zoo

    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), 15)
    post = infer.smc(400, devices="all").run(jax.random.PRNGKey(20261128), zoo.lgssm_1d,
                                             np.asarray(ys))
    print(jax.device_count(), jax.local_device_count(), float(post.log_evidence),
          np.asarray(post.log_weights).shape[0])
    """
)


@pytest.mark.slow
def test_smc_sharded_across_two_processes():
    """Two processes x 2 CPU devices (``jax.distributed.initialize``, gloo collectives):
    the mesh spans the 4 devices of both processes, ``SMC.run`` gathers the sharded result
    on each (``to_host``), and both see the single-process answer."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        address = f"localhost:{s.getsockname()[1]}"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-c", MULTIHOST_CHILD, address, str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), 15)
    single = infer.smc(400).run(jax.random.PRNGKey(20261128), zoo.lgssm_1d, ys)
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
        devices, local, log_z, n = out.strip().splitlines()[-1].split()
        assert (int(devices), int(local), int(n)) == (4, 2, 400)
        np.testing.assert_allclose(float(log_z), float(single.log_evidence), rtol=1e-5)
