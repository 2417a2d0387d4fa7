"""Cost of the sampler's own arithmetic per step, without a network.

Times one compiled DDPM and one DDIM step (posterior, thresholding,
per-example noise) at the cascade's resolutions, so that it can be compared
with a U-Net evaluation. Prints milliseconds per step and examples per
second.

  python benchmarks/sampler_step.py
"""

import time

import tensorflow as tf

from cdm_tf.diffusion import create_diffusion
from cdm_tf.diffusion import per_example_noise

REPEATS = 20


def _time(fn, *args):
  fn(*args)  # trace and warm up
  start = time.perf_counter()
  for _ in range(REPEATS):
    out = fn(*args)
  _ = out.numpy()
  return (time.perf_counter() - start) / REPEATS


def main():
  diffusion = create_diffusion("cosine", 1000)
  print(f"{'step':6s} {'shape':>12s} {'batch':>5s} {'ms/step':>9s} "
        f"{'examples/s':>11s}")
  for shape in ((32, 32, 3), (64, 64, 3), (256, 256, 3)):
    for batch in (8, 64):
      seeds = per_example_noise.example_seeds(tf.range(batch))
      x = tf.random.normal([batch, *shape])
      eps = tf.random.normal([batch, *shape])
      t = tf.fill([batch], 500)

      @tf.function
      def ddpm(x, eps, t, seeds=seeds, shape=shape):
        noise = per_example_noise.per_example_normal(seeds, shape, 1, 500)
        return diffusion.p_sample(eps, x, t, noise, logvar_coeff=0.1)[0]

      @tf.function
      def ddim(x, eps, t):
        return diffusion.ddim_step(eps, x, t, t - 1)

      for name, fn in (("ddpm", ddpm), ("ddim", ddim)):
        seconds = _time(fn, x, eps, t)
        print(
            f"{name:6s} {'x'.join(map(str, shape)):>12s} {batch:5d} "
            f"{seconds * 1e3:9.3f} {batch / seconds:11.0f}", flush=True)


if __name__ == "__main__":
  main()
