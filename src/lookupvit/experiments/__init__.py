"""Experiments: the paper's claims reproduced at small scale, and their report."""
