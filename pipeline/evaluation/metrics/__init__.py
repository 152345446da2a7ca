"""Metrics per task (detection, classification, vqa, caption): plain functions and evaluate.Metric."""
