"""Training shared by the diffusion stages and the classifiers: the loop,
distribution strategies, preemption and the run-settings record."""
