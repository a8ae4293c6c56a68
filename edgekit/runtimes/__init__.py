"""Runtimes, one module per engine. Each imports its engine lazily, inside functions."""
