"""The suite's guard against the per-process memory-mapping limit."""

import jax
import jax.numpy as jnp
import pytest

from tests import conftest


@pytest.mark.skipif(conftest.map_count() == 0, reason="needs /proc (Linux)")
def test_release_mappings_clears_the_jit_caches_above_the_bound():
  fns = [jax.jit(lambda x, i=i: jnp.cumsum(x) * i) for i in range(8)]
  for i, f in enumerate(fns):
    f(jnp.ones(i + 1)).block_until_ready()
  assert all(f._cache_size() == 1 for f in fns)  # pylint: disable=protected-access
  count = conftest.map_count()
  assert not conftest.release_mappings(high=count + 10_000)
  assert all(f._cache_size() == 1 for f in fns)  # pylint: disable=protected-access
  assert conftest.release_mappings(high=0)
  assert all(f._cache_size() == 0 for f in fns)  # pylint: disable=protected-access
  assert 1000 < conftest.MAPS_HIGH <= conftest._max_map_count()  # pylint: disable=protected-access
