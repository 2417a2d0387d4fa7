"""Training a diffusion stage: its input pipeline, optimizers, text
conditioning, fine-tuning initialisation and the training entry point
(``trainer.train``) over the shared loop of ``cdm_tf.training``."""
