"""divrl.testing: the exact expectation over a tabular policy, whose gradient
is the analytic target of the expected-gradient tests, against central finite
differences of the NumPy reference (``tests/references/testing.py``)."""

import jax
import numpy as np

from tests.references import testing as ref
from tests.test_advantages import POLICY, _assert_tree_close, _grad_j


def test_grad_j_autodiff_matches_finite_differences():
  """The analytic target itself, checked against the NumPy reference."""
  params = POLICY.init(jax.random.key(0))
  rewards = jax.random.normal(jax.random.key(1), (9,))
  fd = ref.expected_reward_grad_fd([np.asarray(p, np.float64) for p in params],
                                   np.asarray(rewards, np.float64))
  _assert_tree_close(_grad_j(params, rewards), fd, rtol=1e-4, atol=1e-5)
