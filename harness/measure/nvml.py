"""NVML sampler: reads one GPU every 10 ms in a background thread while the work runs.

What it reports (MiB, %, W, J): device memory used before the work (baseline) and at its peak,
this process's own GPU memory when the driver lists our process, the mean GPU utilisation and
power, and the energy from the GPU's total-energy counter (mJ since the driver loaded).

Every figure NVML cannot give is None with its reason in `reasons`: no NVML library, a GPU the
UUID does not match, a query the GPU does not support (MIG slices report no power or energy),
our process hidden from the driver (containers). Never zero, never an exception.
It imports no torch: the caller passes the GPU's UUID (see harness.measure.measurement).
"""
import os
import threading
import time

import pynvml

from harness.records.machine import handle_by_uuid

MIB = 1024 * 1024


def _why(fn_name, err, is_mig):
    text = f"{fn_name}: {err}"
    if is_mig and getattr(err, "value", None) == pynvml.NVML_ERROR_NOT_SUPPORTED:
        return f"not reported by NVML for a MIG slice ({text})"
    return text


class _Series:
    """Running max / mean of one sampled quantity, or the reason it has no value."""

    def __init__(self):
        self.max = self.sum = self.last = None
        self.n = 0
        self.error = None
        self.unsupported = False  # stop asking after a Not Supported: it will not change

    def add(self, value):
        self.max = value if self.max is None else max(self.max, value)
        self.sum = value if self.sum is None else self.sum + value
        self.last = value
        self.n += 1

    @property
    def mean(self):
        return self.sum / self.n if self.n else None


class NvmlSampler:
    """Sample the GPU whose UUID is `uuid` (as torch reports it, with or without "GPU-"/"MIG-").

    start() takes the baseline (unless `baseline_mib` is given: a session baseline taken
    before this process first allocated GPU memory) and the energy counter; stop() takes a last
    sample and the counter again. With background=False nothing samples until sample() is called.
    """

    def __init__(self, uuid, interval_s=0.01, pid=None, baseline_mib=None, background=True):
        self.uuid, self.interval_s, self.background = uuid, interval_s, background
        self.pid = os.getpid() if pid is None else pid
        self.baseline_mib = baseline_mib
        self.handle = None
        self.is_mig = None
        self.reasons = {}
        self.memory, self.util, self.power, self.process = _Series(), _Series(), _Series(), _Series()
        self._process_seen = self._process_hidden_memory = False
        self._energy = [None, None]  # counter (mJ) at start and stop
        self._power_integral_j, self._last_power = 0.0, None  # (time, W) of the previous power sample
        self._t0 = self._t1 = None
        self._thread, self._stop = None, threading.Event()
        self._initialised = False

    # -- life cycle --------------------------------------------------------------------------
    def start(self):
        try:
            pynvml.nvmlInit()
            self._initialised = True
        except pynvml.NVMLError as e:
            self.reasons["nvml"] = f"NVML unavailable (nvmlInit: {e})"
            return self
        self.handle = self._find_handle()
        if self.handle is None:
            return self
        try:
            self.is_mig = bool(pynvml.nvmlDeviceIsMigDeviceHandle(self.handle))
        except pynvml.NVMLError as e:
            self.reasons["is_mig"] = f"nvmlDeviceIsMigDeviceHandle: {e}"
        self._t0 = time.perf_counter()
        self._energy[0] = self._read_energy("start")
        self.sample()
        if self.baseline_mib is None:
            self.baseline_mib = self.memory.last
        if self.background:
            self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self.handle is not None:
            self.sample()  # a short run still gets a reading at its end
            self._energy[1] = self._read_energy("stop")
            self._t1 = time.perf_counter()
        if self._initialised:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass
            self._initialised = False
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            self.sample()

    def _find_handle(self):
        """NVML handle for this UUID; never by index, which CUDA_VISIBLE_DEVICES renumbers."""
        if not self.uuid:
            self.reasons["nvml"] = "no GPU UUID to look up in NVML"
            return None
        handle, errors = handle_by_uuid(self.uuid)
        if handle is None:
            self.reasons["nvml"] = "NVML has no GPU with torch's UUID (" + "; ".join(errors) + ")"
        return handle

    # -- readings ----------------------------------------------------------------------------
    def _read(self, series, name, fn):
        if series.unsupported:
            return None
        try:
            return fn()
        except pynvml.NVMLError as e:
            series.error = _why(name, e, self.is_mig)
            series.unsupported = getattr(e, "value", None) == pynvml.NVML_ERROR_NOT_SUPPORTED
            return None

    def _read_energy(self, when):
        try:
            return pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except pynvml.NVMLError as e:
            self.reasons.setdefault("energy", f"at {when}: " + _why("nvmlDeviceGetTotalEnergyConsumption", e, self.is_mig))
            return None

    def sample(self):
        """Take one reading of every quantity (called by the thread every interval_s)."""
        h = self.handle
        mem = self._read(self.memory, "nvmlDeviceGetMemoryInfo", lambda: pynvml.nvmlDeviceGetMemoryInfo(h).used)
        if mem is not None:
            self.memory.add(mem / MIB)
        util = self._read(self.util, "nvmlDeviceGetUtilizationRates", lambda: pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
        if util is not None:
            self.util.add(float(util))
        power = self._read(self.power, "nvmlDeviceGetPowerUsage", lambda: pynvml.nvmlDeviceGetPowerUsage(h))
        if power is not None:
            self._add_power(power / 1000.0)
        procs = self._read(self.process, "nvmlDeviceGetComputeRunningProcesses",
                           lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(h))
        if procs is not None:
            for p in procs:
                if p.pid == self.pid:
                    self._process_seen = True
                    if p.usedGpuMemory is None:
                        self._process_hidden_memory = True
                    else:
                        self.process.add(p.usedGpuMemory / MIB)

    def _add_power(self, watts):
        now = time.perf_counter()
        if self._last_power is not None:  # trapezoid: used only when the energy counter is missing
            t, w = self._last_power
            self._power_integral_j += 0.5 * (w + watts) * (now - t)
        self._last_power = (now, watts)
        self.power.add(watts)

    # -- result ------------------------------------------------------------------------------
    def _value(self, series, value, key, reasons):
        if value is None:
            reasons[key] = series.error or self.reasons.get("nvml") or "no NVML sample was taken"
        return value

    def result(self, n_images=None):
        """Figures of the sampled span; energy per image when n_images is given."""
        reasons = {}
        if self.handle is None:
            why = self.reasons.get("nvml", "NVML not started")
            keys = ("device_baseline_used_mib", "device_peak_used_mib", "process_peak_vram_mib",
                    "gpu_util_mean", "power_w_mean", "power_w_max", "energy_j", "energy_j_per_image")
            return {**{k: None for k in keys}, "energy_source": None, "is_mig": None, "nvml_samples": 0,
                    "reasons": {k: why for k in keys}}
        out = {
            "is_mig": self.is_mig,
            "nvml_samples": self.memory.n,
            "nvml_interval_s": self.interval_s if self.background else None,
            "device_baseline_used_mib": self._value(self.memory, self.baseline_mib, "device_baseline_used_mib", reasons),
            "device_peak_used_mib": self._value(self.memory, self.memory.max, "device_peak_used_mib", reasons),
            "gpu_util_mean": self._value(self.util, self.util.mean, "gpu_util_mean", reasons),
            "power_w_mean": self._value(self.power, self.power.mean, "power_w_mean", reasons),
            "power_w_max": self._value(self.power, self.power.max, "power_w_max", reasons),
        }
        out["process_peak_vram_mib"] = self.process.max
        if self.process.max is None:
            if self.process.error:
                reasons["process_peak_vram_mib"] = self.process.error
            elif self._process_hidden_memory:
                reasons["process_peak_vram_mib"] = "the driver lists our process but not its memory (usedGpuMemory unavailable)"
            else:
                reasons["process_peak_vram_mib"] = (f"our process (pid {self.pid}) is not in the driver's process list "
                                                    "(usual inside a container: its own PID namespace)")
        out.update(self._energy_result(n_images, reasons))
        if self.is_mig:
            out["notes"] = ["MIG slice: memory is the slice's; utilisation, power and energy are what NVML allows "
                            "for a slice (often not supported)"]
        out["reasons"] = reasons
        return out

    def _energy_result(self, n_images, reasons):
        start, stop = self._energy
        energy, source = None, None
        if start is not None and stop is not None and stop >= start:
            energy, source = (stop - start) / 1000.0, "nvmlDeviceGetTotalEnergyConsumption (whole GPU)"
        elif self.power.n >= 2:
            energy, source = self._power_integral_j, "integral of sampled power (energy counter unavailable)"
            reasons["energy_counter"] = self.reasons.get("energy", "energy counter went backwards")
        else:
            reasons["energy_j"] = self.reasons.get("energy") or "energy counter went backwards"
        per_image = None
        if energy is not None and n_images:
            per_image = energy / n_images
        else:
            reasons["energy_j_per_image"] = reasons.get("energy_j") or "no images were counted"
        return {"energy_j": energy, "energy_source": source, "energy_j_per_image": per_image}
