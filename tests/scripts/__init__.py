"""Tests of the command-line entry points under scripts/."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


def run_script(module: str, *args: str, timeout: int = 600
               ) -> subprocess.CompletedProcess:
  """Runs ``python -m <module> <args>`` from the repository root on CPU."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                        env=env, capture_output=True, text=True,
                        timeout=timeout)
