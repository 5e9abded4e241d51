"""Worker for tests/rl/test_trainer.py: one of N jax.distributed
processes (gloo CPU collectives on 127.0.0.1) running the small RL config."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (
    f"--xla_force_host_platform_device_count={sys.argv[4]}")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_default_matmul_precision", "highest")


def main():
  port, num_processes, process_id = (int(a) for a in sys.argv[1:4])
  workdir, cache_root, out = sys.argv[5:8]
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                             num_processes=num_processes,
                             process_id=process_id)
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))
  # pylint: disable-next=g-import-not-at-top
  from tests.rl.test_trainer import small_config
  from divrl.rl.trainer import Trainer  # pylint: disable=g-import-not-at-top
  c = small_config(workdir, cache_root, num_minibatches=2)
  c.mesh.data = jax.device_count()
  c.log.tensorboard = False
  trainer = Trainer(c, log=lambda *a: None)
  result = trainer.run()
  if process_id == 0:
    with open(out, "w") as f:
      json.dump({"history": result["history"], "final": result["final"],
                 "devices": jax.device_count(),
                 "processes": jax.process_count()}, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
