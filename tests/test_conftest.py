"""The suite's guard against the per-process memory-mapping limit."""

import jax
import jax.numpy as jnp
import pytest

from tests import conftest


@pytest.mark.skipif(conftest.map_count() == 0, reason="needs /proc (Linux)")
def test_release_mappings_frees_compiled_programs():
  jax.clear_caches()
  before = conftest.map_count()
  for i in range(40):
    jax.jit(lambda x, i=i: jnp.cumsum(x) * i)(jnp.ones(i + 1)).block_until_ready()
  grown = conftest.map_count()
  assert grown > before + 40 * 5, (before, grown)   # ~20 per executable
  assert not conftest.release_mappings(high=grown + 1000)
  assert conftest.release_mappings(high=before)
  assert conftest.map_count() < before + 40 * 5, (before, conftest.map_count())
  assert conftest.MAPS_HIGH > 1000
