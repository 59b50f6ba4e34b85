"""Evaluation of trained models: accuracy and FLOPs per grid, corruptions and robustness, few-shot probes, plots."""
