"""Do NVML's and PyTorch's peaks tell the same story? A check kept in every GPU measurement.

PyTorch sees only its caching allocator: max allocated <= max reserved. NVML sees the whole
process (or the whole GPU minus a baseline): reserved memory plus the CUDA context, kernels and
library handles outside the allocator. So NVML's peak must be at least PyTorch's max reserved
(cached blocks are not given back inside a measured span), and the gap is the context, a few
hundred MiB. A gap below zero means the sampler missed the peak or read another GPU; a very
large gap usually means another process used the GPU meanwhile.
"""
TOLERANCE_MIB = 2.0  # NVML reports whole MiB
LARGE_GAP_MIB = 4096.0


def check_memory(m):
    """{"consistent": bool or None, "nvml_minus_torch_reserved_mib", "problems", "notes"} for a
    measurement dict holding peak_vram_mib, torch_max_allocated_mib and torch_max_reserved_mib."""
    allocated, reserved, nvml = (m.get(k) for k in ("torch_max_allocated_mib", "torch_max_reserved_mib",
                                                     "peak_vram_mib"))
    missing = [k for k, v in (("torch_max_allocated_mib", allocated), ("torch_max_reserved_mib", reserved),
                              ("peak_vram_mib", nvml)) if v is None]
    if missing:
        return {"consistent": None, "nvml_minus_torch_reserved_mib": None, "problems": [],
                "notes": [f"not checked: no {', '.join(missing)}"]}
    problems, notes = [], []
    gap = nvml - reserved
    if allocated > reserved + TOLERANCE_MIB:
        problems.append(f"torch max allocated {allocated:.0f} MiB > max reserved {reserved:.0f} MiB")
    if gap < -TOLERANCE_MIB:
        problems.append(f"NVML peak {nvml:.0f} MiB < torch max reserved {reserved:.0f} MiB: the sampler missed "
                        "the peak or read another GPU")
    device_peak, process = m.get("device_peak_used_mib"), m.get("process_peak_vram_mib")
    if process is not None and device_peak is not None and process > device_peak + TOLERANCE_MIB:
        problems.append(f"NVML process peak {process:.0f} MiB > device peak {device_peak:.0f} MiB")
    if gap > LARGE_GAP_MIB:
        source = m.get("peak_vram_source") or ""
        notes.append(f"NVML peak is {gap:.0f} MiB above torch max reserved: more than a CUDA context"
                     + ("; another process may have used the GPU meanwhile" if source.startswith("device")
                        else "; memory allocated outside PyTorch's allocator"))
    return {"consistent": not problems, "nvml_minus_torch_reserved_mib": gap, "problems": problems, "notes": notes}
