"""Classifier-free guidance (Ho & Salimans 2022) in the papers' convention.

eps = w * eps(x_t, c) + (1 - w) * eps(x_t, null): w = 1 is plain conditional
sampling, w = 0 unconditional, w > 1 guided (1.25 for Azizi et al.'s base
model, 1.0 for their super-resolution stages). A learned variance is taken
from the conditional branch.
"""

import tensorflow as tf


def classifier_free_guidance(cond_output, uncond_output, guidance_weight,
                             learned_variance):
  cond_output = tf.cast(cond_output, tf.float32)
  uncond_output = tf.cast(uncond_output, tf.float32)
  if learned_variance:
    eps_cond, var_cond = tf.split(cond_output, 2, axis=-1)
    eps_uncond, _ = tf.split(uncond_output, 2, axis=-1)
  else:
    eps_cond, eps_uncond, var_cond = cond_output, uncond_output, None
  eps = guidance_weight * eps_cond + (1.0 - guidance_weight) * eps_uncond
  return eps if var_cond is None else tf.concat([eps, var_cond], axis=-1)


def guided_model_fn(model_fn, conditioning, null_conditioning, guidance_weight,
                    learned_variance):
  """Wraps ``model_fn(x, time_input, conditioning)`` into ``fn(x, time_input)``.

  ``conditioning`` and ``null_conditioning`` are matching nests of batched
  tensors (e.g. labels and the null label). For w != 1 both branches run in
  one network call on a doubled batch.
  """
  if guidance_weight == 1.0:
    return lambda x, time_input: model_fn(x, time_input, conditioning)

  def fn(x, time_input):
    both = tf.nest.map_structure(lambda c, u: tf.concat([c, u], axis=0),
                                 conditioning, null_conditioning)
    output = model_fn(tf.concat([x, x], axis=0),
                      tf.concat([time_input, time_input], axis=0), both)
    cond_output, uncond_output = tf.split(output, 2, axis=0)
    return classifier_free_guidance(cond_output, uncond_output, guidance_weight,
                                    learned_variance)

  return fn
