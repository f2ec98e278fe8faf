"""Prefect flows: compose tasks into runs with typed (pydantic) parameters for the UI."""
