"""Experiment launchers (absl mains) and their ml_collections configs."""
