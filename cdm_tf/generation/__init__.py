"""Sampling cascades and writing class-balanced synthetic datasets."""
