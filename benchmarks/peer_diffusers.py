"""cdm_tf against diffusers on the same U-Net, timed side by side.

The reference U-Net (36,258,819 parameters, the size of DDPM's CIFAR-10
model) is built twice: in cdm_tf (`train_step.reference_unet`) and as
diffusers' `UNet2DModel` (sample_size 32, 3 channels in and out,
block_out_channels 128,256,256,256, 2 layers per block, attention at 16x16
with 8 channels per head, 1000 classes plus the null label (1001 class
embeddings), additive time embedding, conv down/up-sampling). Both are
timed in float32 and in bfloat16 (Keras mixed_bfloat16 / torch CPU
autocast), for a train step (cdm_tf: DiffusionModel.train_step with
clipping and EMA; diffusers: forward, MSE to the noise, backward, Adam) and
for a forward pass, median of `--steps` calls at batch `--batch_size`.

This machine is shared, so absolute times drift: the two frameworks run in
two processes that take turns, measurement by measurement (the peer waits
on a pipe while cdm_tf runs, and the other way round), and the order flips
every round. The table gives the median over rounds and the ratio
cdm_tf / diffusers (below 1: cdm_tf is faster). The load average is printed
at start and end: with other jobs on the cores, use
`--peer_omp_wait_policy=PASSIVE`, else torch's OpenMP spin-waiting, not the
model, dominates its times.

diffusers and torch are not dependencies of this project: install them in a
throwaway venv outside the project and pass its python (torch 2.14.1, CPU;
the diffusers pin is the release the first numbers were taken with):

  python3 -m venv ../peer_venv
  ../peer_venv/bin/pip install torch==2.14.1 diffusers==0.42.0
  .venv/bin/python benchmarks/peer_diffusers.py \
      --peer_python=../peer_venv/bin/python

The peer side is this file run by the peer python with `--peer_only`; it
imports neither TensorFlow nor cdm_tf.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PEER_TAG = "PEER "
ROWS = (("float32", "train"), ("float32", "forward"),
        ("mixed_bfloat16", "train"), ("mixed_bfloat16", "forward"))

# -------------------------------------------------------------- the peer side


def _diffusers_unet():
  """The reference U-Net as diffusers' UNet2DModel."""
  import diffusers  # pylint: disable=g-import-not-at-top
  return diffusers.UNet2DModel(
      sample_size=32,
      in_channels=3,
      out_channels=3,
      block_out_channels=(128, 256, 256, 256),
      layers_per_block=2,
      down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D",
                        "DownBlock2D"),
      up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
      # 1000 classes + the null label of classifier-free guidance, as the
      # cdm_tf label embedding has.
      num_class_embeds=1001,
      attention_head_dim=8,
      norm_num_groups=32,
      resnet_time_scale_shift="default",
      downsample_type="conv",
      upsample_type="conv",
      dropout=0.0)


def _median_seconds(fn, steps):
  fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def peer_serve(batch_size, steps):
  """Answers "<policy> <train|forward>" lines on stdin with a time each."""
  # pylint: disable=g-import-not-at-top
  import diffusers
  import torch
  import torch.nn.functional as F
  # pylint: enable=g-import-not-at-top
  torch.manual_seed(0)
  model = _diffusers_unet()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
  x_t = torch.rand(batch_size, 3, 32, 32) * 2 - 1
  noise = torch.randn(batch_size, 3, 32, 32)
  timesteps = torch.randint(0, 1000, (batch_size,))
  labels = torch.arange(batch_size) % 1000

  def train(bf16):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
      out = model(x_t, timesteps, class_labels=labels).sample
    loss = F.mse_loss(out.float(), noise)
    loss.backward()
    optimizer.step()
    return loss.item()

  def forward(bf16):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16,
                                         enabled=bf16):
      return model(x_t, timesteps, class_labels=labels).sample[0, 0, 0,
                                                               0].item()

  def matmul(bf16):
    a = torch.randn(2048, 2048, dtype=torch.bfloat16 if bf16 else None)
    return lambda: (a @ a)[0, 0].item()

  def say(message):
    print(PEER_TAG + json.dumps(message), flush=True)

  say({
      "parameters": sum(p.numel() for p in model.parameters()),
      "torch": torch.__version__, "diffusers": diffusers.__version__,
      "threads": torch.get_num_threads()
  })
  for line in sys.stdin:
    policy, what = line.split()
    bf16 = "bfloat16" in policy
    if what == "matmul":
      seconds = _median_seconds(matmul(bf16), steps)
    else:
      fn = train if what == "train" else forward
      seconds = _median_seconds(lambda fn=fn, bf16=bf16: fn(bf16), steps)
    say({"seconds": seconds})


# ------------------------------------------------------------ the cdm_tf side


class Peer:
  """The peer process: one request at a time, answered on its stdout."""

  def __init__(self, python, batch_size, steps, omp_wait_policy=None):
    env = dict(os.environ)
    if omp_wait_policy:
      env["OMP_WAIT_POLICY"] = omp_wait_policy
    self.process = subprocess.Popen([
        python,
        os.path.abspath(__file__), "--peer_only", f"--batch_size={batch_size}",
        f"--steps={steps}"
    ], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    self.info = self._answer()

  def _answer(self):
    for line in self.process.stdout:
      if line.startswith(PEER_TAG):
        return json.loads(line[len(PEER_TAG):])
    raise RuntimeError(f"the peer exited ({self.process.wait()})")

  def seconds(self, policy, what):
    self.process.stdin.write(f"{policy} {what}\n")
    self.process.stdin.flush()
    return self._answer()["seconds"]

  def close(self):
    self.process.stdin.close()
    self.process.wait()


def compare(args):
  """Alternates cdm_tf and peer measurements; prints the table."""
  # Sibling script: benchmarks/ is on sys.path when this file runs.
  import train_step  # pylint: disable=g-import-not-at-top
  print("load average at start: %.1f %.1f %.1f" % os.getloadavg())
  peer = Peer(args.peer_python, args.batch_size, args.steps,
              args.peer_omp_wait_policy)
  try:
    benches = {
        policy: train_step.CdmTfBench(policy, args.batch_size)
        for policy in train_step.POLICIES
    }
    unet = benches["float32"].unet
    params = unet.count_params()
    gflop = train_step.forward_gflop(unet, args.batch_size)
    print(f"cdm_tf {params:,} parameters, diffusers "
          f"{peer.info['parameters']:,} (torch {peer.info['torch']}, "
          f"diffusers {peer.info['diffusers']}, {peer.info['threads']} "
          f"threads); forward {gflop:.1f} GFLOP at batch {args.batch_size}")
    if params != peer.info["parameters"]:
      print("WARNING: the two U-Nets differ in size", flush=True)
    times = {row: ([], []) for row in ROWS}
    peaks = {policy: ([], []) for policy in train_step.POLICIES}
    for rnd in range(args.rounds):
      cdm_first = rnd % 2 == 0
      for policy in train_step.POLICIES:
        dtype = train_step.matmul_dtype(policy)

        def mine(dtype=dtype):
          return train_step.matmul_gflops(dtype, args.steps)

        def theirs(policy=policy):
          return (2 * train_step.MATMUL_SIDE**3 / 1e9 /
                  peer.seconds(policy, "matmul"))

        for side in ((0, 1) if cdm_first else (1, 0)):
          peaks[policy][side].append(mine() if side == 0 else theirs())
        for what in ("train", "forward"):
          bench = benches[policy]
          measure = (bench.train_seconds
                     if what == "train" else bench.forward_seconds)
          for side in ((0, 1) if cdm_first else (1, 0)):
            times[(policy, what)][side].append(
                measure(args.steps) if side ==
                0 else peer.seconds(policy, what))
          cdm, other = (v[-1] for v in times[(policy, what)])
          print(
              f"round {rnd + 1}: {policy:15s} {what:8s} cdm_tf "
              f"{cdm:6.3f} s  diffusers {other:6.3f} s  ratio "
              f"{cdm / other:5.2f}", flush=True)
    print(f"\nmedian of {args.rounds} rounds (each a median of {args.steps} "
          f"calls), batch {args.batch_size}; GFLOP/s counts a train step as "
          f"3 forwards; peak = 2048x2048 matmul in the same dtype, same run "
          f"(TF for cdm_tf, torch for diffusers)")
    print("| | cdm_tf s | diffusers s | ratio | cdm_tf GFLOP/s (% of peak) "
          "| diffusers GFLOP/s (% of peak) |")
    print("|---|---|---|---|---|---|")
    for policy, what in ROWS:
      cdm, other = (statistics.median(v) for v in times[(policy, what)])
      flop = gflop * (3 if what == "train" else 1)
      tf_peak, torch_peak = (statistics.median(v) for v in peaks[policy])
      label = "fp32" if policy == "float32" else "bf16"
      print(f"| {label} {what} | {cdm:.3f} | {other:.3f} | {cdm / other:.2f} "
            f"| {flop / cdm:.0f} ({100 * flop / cdm / tf_peak:.0f}%) "
            f"| {flop / other:.0f} ({100 * flop / other / torch_peak:.0f}%) |")
    for policy in train_step.POLICIES:
      tf_peak, torch_peak = (statistics.median(v) for v in peaks[policy])
      print(f"matmul peak {policy}: TF {tf_peak:.0f} GFLOP/s, torch "
            f"{torch_peak:.0f} GFLOP/s")
    print("load average at end: %.1f %.1f %.1f" % os.getloadavg())
  finally:
    peer.close()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--peer_python", default="../peer_venv/bin/python",
                      help="python of the venv holding torch and diffusers")
  parser.add_argument("--peer_only", action="store_true",
                      help="internal: serve the diffusers side on stdin")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--steps", type=int, default=5,
                      help="timed calls per measurement (median)")
  parser.add_argument("--rounds", type=int, default=3,
                      help="alternations of the two frameworks per row")
  parser.add_argument(
      "--peer_omp_wait_policy", default=None,
      help="OMP_WAIT_POLICY for torch (e.g. PASSIVE). Unset keeps torch's "
      "default, right for an idle machine; on a machine other jobs load, "
      "torch's spinning OpenMP threads lose many times their work (seen: "
      "a 2-3x slower fp32 step), which would flatter cdm_tf")
  args = parser.parse_args()
  if args.peer_only:
    peer_serve(args.batch_size, args.steps)
  else:
    compare(args)


if __name__ == "__main__":
  main()
