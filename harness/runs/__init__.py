"""Running checkpoints: the one runner (a sweep; eval is a sweep of one), unit keys, checkpoint discovery, loss sources, shards and processes, the in-training callback and loggers."""
