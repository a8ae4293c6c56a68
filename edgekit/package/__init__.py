"""Packaging artifacts for runtimes: Ollama (Modelfile, create, store, verify)."""
