"""SpanMeasurement: time, memory and energy of a span of work, as record["measurement"].

    with SpanMeasurement(device) as m:       # enter before the model goes to the GPU: baseline
        model.to(device)                     # (or pass baseline_mib=nvml_baseline_mib(device) taken then)
        m.start_clock()                      # optional: images/s from here, not from entering
        for images, labels in loader:
            ...
            m.count(len(images))
    record["measurement"] = m.result()       # also holds wall_s and images_per_s

On a GPU: NVML peak / baseline / process memory, utilisation, power, energy per image (see
harness.measure.nvml) beside PyTorch's own peaks (reset on entering), and whether the two agree
(memory_check, see harness.measure.consistency). Always: peak host RSS.
A figure that cannot be had is None with its reason in result()["reasons"].
"""
import time

import torch

from harness.measure.consistency import check_memory
from harness.measure.host import peak_rss_mib, reset_peak_rss
from harness.measure.nvml import NvmlSampler

MIB = 1024 * 1024
GPU_KEYS = ("peak_vram_mib", "energy_j_per_image", "gpu_util_mean", "power_w_mean",
            "torch_max_allocated_mib", "torch_max_reserved_mib", "device_baseline_used_mib",
            "device_peak_used_mib", "process_peak_vram_mib")


def cuda_uuid(device):
    """torch's UUID of a CUDA device: NVML is asked by UUID, never by index."""
    device = torch.device(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return str(torch.cuda.get_device_properties(index).uuid)


def nvml_baseline_mib(device):
    """NVML device memory used now: call before this process puts anything on the GPU (the model,
    a first tensor), then pass it as SpanMeasurement(baseline_mib=...). None without NVML."""
    if torch.device(device).type != "cuda":
        return None
    sampler = NvmlSampler(cuda_uuid(device), background=False).start()
    sampler.stop()
    return sampler.baseline_mib


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def own_peak_vram(nvml):
    """(MiB, source) of this process's peak GPU memory from an NvmlSampler result, or (None, why)."""
    if nvml.get("process_peak_vram_mib") is not None:
        return nvml["process_peak_vram_mib"], "process (NVML process list)"
    peak, base = nvml.get("device_peak_used_mib"), nvml.get("device_baseline_used_mib")
    if peak is not None and base is not None:
        return peak - base, "device used minus baseline (NVML; includes anything else started on the GPU meanwhile)"
    return None, nvml["reasons"].get("device_peak_used_mib") or nvml["reasons"].get("device_baseline_used_mib")


class SpanMeasurement:
    """Context manager measuring the work inside it; count(n) the images it processed."""

    def __init__(self, device, interval_s=0.01, baseline_mib=None):
        self.device = torch.device(device)
        self.interval_s, self.baseline_mib = interval_s, baseline_mib
        self.n_images = 0
        self.sampler = None
        self._result = None

    @property
    def on_gpu(self):
        return self.device.type == "cuda"

    def __enter__(self):
        self._rss_reset = reset_peak_rss()
        if self.on_gpu:
            uuid = cuda_uuid(self.device)
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.sampler = NvmlSampler(uuid, self.interval_s, baseline_mib=self.baseline_mib).start()
        self._t0 = time.perf_counter()
        return self

    def start_clock(self):
        synchronize(self.device)
        self._t0 = time.perf_counter()

    def count(self, n_images):
        self.n_images += int(n_images)

    def __exit__(self, exc_type, exc, tb):
        try:
            synchronize(self.device)
        except RuntimeError:  # the failure that ended the span may make this fail too
            pass
        self.wall_s = time.perf_counter() - self._t0
        if self.sampler is not None:
            self.sampler.stop()
        self._result = self._collect()
        return False

    def result(self):
        if self._result is None:
            raise RuntimeError("SpanMeasurement.result() is available once the `with` block has ended")
        return self._result

    def _collect(self):
        out = {"device": self.device.type, "n_images": self.n_images, "wall_s": self.wall_s,
               "images_per_s": self.n_images / self.wall_s if self.n_images and self.wall_s > 0 else None}
        reasons, notes = {}, []
        if out["images_per_s"] is None:
            reasons["images_per_s"] = "no images were counted"
        out["peak_rss_mib"], rss_note = peak_rss_mib(self._rss_reset)
        notes.append(f"peak_rss_mib: {rss_note}")
        if not self.on_gpu:
            out.update({k: None for k in GPU_KEYS})
            reasons.update({k: f"no GPU: the run is on {self.device.type}" for k in GPU_KEYS})
        else:
            nvml = self.sampler.result(self.n_images or None)
            reasons.update(nvml.pop("reasons"))
            notes += nvml.pop("notes", [])
            out.update(nvml)
            out["peak_vram_mib"], source = own_peak_vram(nvml)
            if out["peak_vram_mib"] is None:
                reasons["peak_vram_mib"] = source
            else:
                out["peak_vram_source"] = source
            out["torch_max_allocated_mib"] = torch.cuda.max_memory_allocated(self.device) / MIB
            out["torch_max_reserved_mib"] = torch.cuda.max_memory_reserved(self.device) / MIB
            out["memory_check"] = check_memory(out)
        out["reasons"], out["notes"] = reasons, notes
        return out
