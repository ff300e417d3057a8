"""One module per training task (setup, train, export); the shared machinery is in internvl.training."""
