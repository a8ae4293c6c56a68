"""Quantizers, one module per format family. Heavy libraries are imported inside functions."""
