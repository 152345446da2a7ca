"""Evaluation: generate on a split, parse the generations, score them, and report the metrics."""
