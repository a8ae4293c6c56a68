"""The one GGUF reader (header, metadata, tensor table) and the ggml type tables.

Every room that looks inside a GGUF file (models, quantize, runtimes, bench, package) reads
it through here; nothing here imports llama_cpp or torch."""
