"""Detector commands: train, predict, evaluate (see cvcurate.detector)."""
