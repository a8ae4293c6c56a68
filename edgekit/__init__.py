"""edgekit: plan, quantize, measure and package open-weight LLMs for the device you own."""

__version__ = "0.1.0"
