"""ml_collections config files, one per task."""
