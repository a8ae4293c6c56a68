"""The one way edgekit opens NVML (nvidia-ml-py, imported lazily): absent or failing means
"no GPU", with the reason. Used by device detection and the memory samplers (edgekit.bench)
and by runtimes that must know whether a GPU is there (edgekit.runtimes.onnxruntime)."""

from __future__ import annotations

from typing import Any


def open_nvml() -> tuple[Any, str]:
    """The initialised pynvml module, or (None, why not)."""
    try:
        import pynvml
    except ImportError:
        return None, 'nvidia-ml-py is not installed (pip install "edgekit[nvml]"): no GPU looked for'
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ... : no usable GPU here
        return None, f"NVML unavailable ({str(e).strip() or type(e).__name__}): no GPU"
    return pynvml, ""


def nvml_handles() -> tuple[Any, list[Any], str]:
    """(pynvml, a handle per GPU, "") once NVML is initialised, else (None, [], why not)."""
    nv, why = open_nvml()
    if nv is None:
        return None, [], why
    try:
        return nv, [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())], ""
    except Exception as e:
        return None, [], f"NVML failed ({e})"


def shutdown(nv: Any) -> None:
    if nv is not None:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass


def gpu_count() -> int:
    """GPUs NVML shows (0 without NVML)."""
    nv, handles, _ = nvml_handles()
    shutdown(nv)
    return len(handles)
