"""Worker for tests/rl/test_checkpoint.py: one of 2 jax.distributed processes
(gloo CPU collectives on 127.0.0.1, 2 devices each) that save a state with
a leaf sharded across the processes and a replicated one, then restore it
after process 0 has damaged a file of step 2 that process 1 wrote.

Modes: ``flip`` (a bit of that file flipped), ``truncate`` (the file cut to
a third) and ``resume`` (restore only, from an earlier ``truncate`` run's
directory). Each process writes its findings to ``<out>.<process id>``."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def state(v, mesh):
  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  rng = np.random.default_rng(v)
  shard = NamedSharding(mesh, P("d"))
  full = NamedSharding(mesh, P())
  return {
      "sharded": jax.make_array_from_callback(
          (8000,), shard, lambda i, x=rng.normal(size=8000): jnp.asarray(
              x[i], jnp.float32)),
      "replicated": jax.device_put(
          jnp.asarray(rng.normal(size=3000), jnp.float32), full),
      "step": v}


def main():
  port, process_id, directory, mode, out = sys.argv[1:6]
  process_id = int(process_id)
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                             num_processes=2, process_id=process_id)
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from jax.experimental import multihost_utils
  from divrl.rl import checkpoint
  mesh = jax.make_mesh((4,), ("d",))
  result = {}
  if mode != "resume":
    with checkpoint.Checkpointer(directory, save_every=1) as ckpt:
      ckpt.save(1, state(1, mesh), {"s": 1})
      ckpt.save(2, state(2, mesh), {"s": 2})
    layout = json.load(open(os.path.join(directory, "2", "layout",
                                         "metadata")))
    result["crc32"] = {"/".join(e["path"]): "crc32" in e
                       for e in layout["leaves"]}
    multihost_utils.sync_global_devices("saved")
    if process_id == 0:
      # The largest data file process 1 wrote for step 2.
      files = [os.path.join(r, f)
               for r, _, fs in os.walk(os.path.join(directory, "2", "state"))
               for f in fs if os.path.basename(r) == "d" and "process_1" in r]
      path = max(files, key=os.path.getsize)
      data = bytearray(open(path, "rb").read())
      if mode == "flip":
        data[len(data) // 2] ^= 0x01
      else:
        data = data[:len(data) // 3]
      open(path, "wb").write(bytes(data))
      result["damaged"] = os.path.relpath(path, directory)
    multihost_utils.sync_global_devices("damaged")
  target = state(0, mesh)
  logs = []
  with checkpoint.Checkpointer(directory, save_every=1) as ckpt:
    if mode == "flip":
      try:
        ckpt.restore(target=target)
        result["error"] = None
      except checkpoint.CorruptCheckpointError as e:
        result["error"] = str(e)
    try:
      restored, meta, bad = ckpt.restore_latest_good(target=target,
                                                     log=logs.append)
    except checkpoint.CorruptCheckpointError as e:
      # A file this process could not read: the others wait in orbax's
      # barrier, so report and leave without jax.distributed.shutdown().
      result.update(error=str(e), unreadable=e.unreadable, logs=logs)
      with open(f"{out}.{process_id}", "w") as f:
        json.dump(result, f)
      os._exit(0)  # pylint: disable=protected-access
    want = state(1, mesh)
    result.update(
        meta=meta, bad=bad, steps=ckpt.all_steps(), logs=logs,
        equal={k: bool(np.array_equal(
            multihost_utils.process_allgather(restored[k], tiled=True),
            multihost_utils.process_allgather(want[k], tiled=True)))
               for k in ("sharded", "replicated")},
        step=restored["step"])
  with open(f"{out}.{process_id}", "w") as f:
    json.dump(result, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
