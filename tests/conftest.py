import jax
import pytest


@pytest.fixture
def x64():
    """Run a test in double precision (exact-answer comparisons to 1e-6 and below)."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
