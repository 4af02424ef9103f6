"""A private redis-server for `make run`, the evaluation and the tests: not the engine,
which only ever gets a Redis URL."""
