"""jssl.train: the engine. Import the submodule you need (state, optim, sharding, step,
checkpoint, loop, logging); only `loop` reaches the data pipeline (and so TensorFlow)."""
