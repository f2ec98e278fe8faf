"""Prefect tasks: thin, chunk-sized wrappers over the Prefect-free code in `passflow`."""
