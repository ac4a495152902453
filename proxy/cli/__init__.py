"""The `modgate` console script."""
