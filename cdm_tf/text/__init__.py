"""Frozen text encoders, class prompts, cached prompt embeddings and the
U-Net's text inputs (``conditioning``: their keys and the null prompt).

The text-to-image cascade is conditioned on a frozen text encoder's token
embeddings (cross-attention) and pooled embedding (added to the time-step
embedding); fine-tuned into a class-conditional ImageNet model, each class's
prompt is its short class name, so the 1000 prompts are encoded once and
cached. ``factory.create_encoder`` is where gin selects the encoder
(all-MiniLM-L6-v2 by default, a local T5 otherwise).
"""
