"""Training: distribution strategies, optimizers, input pipelines, the loop."""
