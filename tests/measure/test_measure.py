"""Measurement logic on CPU: the NVML sampler against a scripted fake NVML, the OOM-surviving
sweep, the fit search, host RSS, params/GFLOPs and the cost-table row."""
import time
import types
import weakref

import numpy as np
import pynvml
import pytest
import torch

from harness.errors import UserError
from harness.measure import fit, host, measurement, nvml, throughput
from harness.measure.cost import count_gflops, count_params
from harness.measure.nvml import NvmlSampler
from harness.measure.throughput import SyntheticInput, Timing

MIB = 2**20
PID = 4242


def nvml_error(code):
    return pynvml.NVMLError(code)


class FakeNvml:
    """Scripted NVML: each reading pops the next scripted value (the last one repeats).

    A scripted value that is an NVMLError is raised instead of returned."""

    def __init__(self, monkeypatch, *, uuids=("GPU-abc",), mig=False, memory=(1000,), util=(50,),
                 power_mw=(100_000,), energy_mj=(0,), procs=((),), init_error=None):
        self.script = {"memory": list(memory), "util": list(util), "power": list(power_mw),
                       "energy": list(energy_mj), "procs": list(procs)}
        self.calls = {k: 0 for k in self.script}
        self.uuids, self.mig, self.init_error = uuids, mig, init_error
        self.shutdowns = 0
        for name in ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetHandleByUUID", "nvmlDeviceIsMigDeviceHandle",
                     "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetPowerUsage",
                     "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetComputeRunningProcesses"):
            monkeypatch.setattr(pynvml, name, getattr(self, name))

    def _next(self, key):
        self.calls[key] += 1
        values = self.script[key]
        value = values.pop(0) if len(values) > 1 else values[0]
        if isinstance(value, pynvml.NVMLError):
            raise value
        return value

    def nvmlInit(self):
        if self.init_error is not None:
            raise nvml_error(self.init_error)

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.uuids:
            raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)
        return ("handle", uuid)

    def nvmlDeviceIsMigDeviceHandle(self, handle):
        return int(self.mig)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=self._next("memory") * MIB)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=self._next("util"), memory=0)

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._next("power")

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self._next("energy")

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=None if mib is None else mib * MIB)
                for pid, mib in self._next("procs")]


def run_sampler(samples_between=2, n_images=None, uuid="abc", **kwargs):
    """start (1 sample) + `samples_between` samples + stop (1 sample), no thread: deterministic."""
    s = NvmlSampler(uuid, pid=PID, background=False, **kwargs).start()
    for _ in range(samples_between):
        s.sample()
    s.stop()
    return s.result(n_images)


# -- NVML sampler ------------------------------------------------------------------------------

def test_sampler_baseline_peak_process_energy(monkeypatch):
    fake = FakeNvml(monkeypatch, memory=[1000, 3000, 5000, 4000], util=[40, 60, 80, 100],
                    power_mw=[100_000, 300_000], energy_mj=[10_000, 70_000],
                    procs=[[(PID, 900), (7, 50)], [(PID, 2900)], [(PID, 3500), (7, 4000)], [(PID, 3100)]])
    r = run_sampler(n_images=30)
    assert r["device_baseline_used_mib"] == 1000  # the reading at start, before the work
    assert r["device_peak_used_mib"] == 5000
    assert r["process_peak_vram_mib"] == 3500  # our pid only, not pid 7's 4000
    assert r["gpu_util_mean"] == pytest.approx(70)
    assert r["power_w_max"] == pytest.approx(300)
    assert r["energy_j"] == pytest.approx(60.0)  # (70000 - 10000) mJ
    assert r["energy_j_per_image"] == pytest.approx(2.0)
    assert r["energy_source"].startswith("nvmlDeviceGetTotalEnergyConsumption")
    assert r["nvml_samples"] == 4 and r["is_mig"] is False
    assert r["reasons"] == {}
    assert fake.shutdowns == 1


def test_sampler_session_baseline_overrides_start_reading(monkeypatch):
    FakeNvml(monkeypatch, memory=[2500, 6000])
    r = run_sampler(baseline_mib=500.0)
    assert r["device_baseline_used_mib"] == 500.0 and r["device_peak_used_mib"] == 6000


def test_process_hidden_from_driver_gives_null_with_reason(monkeypatch):
    FakeNvml(monkeypatch, memory=[1000, 4000, 3000], procs=[[(99, 3000)]])  # a container: other PIDs
    r = run_sampler(samples_between=1)
    assert r["process_peak_vram_mib"] is None
    assert f"pid {PID}" in r["reasons"]["process_peak_vram_mib"]
    mib, source = measurement.own_peak_vram(r)  # falls back on device used minus baseline
    assert mib == 3000 and source.startswith("device used minus baseline")


def test_process_listed_without_memory(monkeypatch):
    FakeNvml(monkeypatch, procs=[[(PID, None)]])
    r = run_sampler()
    assert r["process_peak_vram_mib"] is None
    assert "usedGpuMemory" in r["reasons"]["process_peak_vram_mib"]


def test_mig_slice_reports_memory_and_says_what_it_cannot(monkeypatch):
    unsupported = nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    fake = FakeNvml(monkeypatch, uuids=("MIG-abc",), mig=True, memory=[800, 2800, 1800],
                    util=[unsupported], power_mw=[unsupported], energy_mj=[unsupported], procs=[[(PID, 2000)]])
    r = run_sampler(samples_between=3, n_images=10)
    assert r["is_mig"] is True
    assert r["device_peak_used_mib"] == 2800 and r["process_peak_vram_mib"] == 2000
    for key in ("gpu_util_mean", "power_w_mean", "energy_j", "energy_j_per_image"):
        assert r[key] is None
        assert "MIG" in r["reasons"][key], key
    assert fake.calls["power"] == 1 and fake.calls["util"] == 1  # Not Supported: asked once only
    assert any("MIG" in n for n in r["notes"])


def test_uuid_is_matched_never_an_index(monkeypatch):
    FakeNvml(monkeypatch, uuids=("GPU-other",))
    r = run_sampler(uuid="abc")
    assert r["device_peak_used_mib"] is None and r["nvml_samples"] == 0
    assert "GPU-abc" in r["reasons"]["device_peak_used_mib"]  # says which UUID it looked for


def test_no_nvml_library_gives_nulls_not_zeros(monkeypatch):
    FakeNvml(monkeypatch, init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    r = run_sampler(n_images=5)
    keys = ("device_baseline_used_mib", "device_peak_used_mib", "process_peak_vram_mib",
            "gpu_util_mean", "power_w_mean", "energy_j_per_image")
    assert all(r[k] is None for k in keys)
    assert all("NVML unavailable" in r["reasons"][k] for k in keys)


def test_transient_errors_skip_a_reading_and_keep_the_rest(monkeypatch):
    unknown = nvml_error(pynvml.NVML_ERROR_UNKNOWN)
    FakeNvml(monkeypatch, memory=[1000, unknown, 7000, unknown], energy_mj=[5_000, unknown], power_mw=[unknown])
    r = run_sampler(n_images=4)
    assert r["device_peak_used_mib"] == 7000  # an error is never read as 0
    assert r["power_w_mean"] is None and "Unknown" in r["reasons"]["power_w_mean"]
    assert r["energy_j_per_image"] is None  # stop reading failed, and no power to integrate
    assert "Unknown" in r["reasons"]["energy_j_per_image"]


def test_energy_falls_back_on_sampled_power(monkeypatch):
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr(nvml, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    FakeNvml(monkeypatch, power_mw=[100_000], energy_mj=[nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)])
    r = run_sampler(samples_between=2, n_images=10)
    assert r["energy_source"].startswith("integral of sampled power")
    # start: t0=0, energy, sample at 1; samples at 2 and 3; final sample at 4: 100 W over 3 s
    assert r["energy_j"] == pytest.approx(300.0)
    assert r["energy_j_per_image"] == pytest.approx(30.0)
    assert "Not Supported" in r["reasons"]["energy_counter"]


def test_background_thread_samples_about_every_10ms(monkeypatch):
    fake = FakeNvml(monkeypatch, memory=[1000, 1500])
    s = NvmlSampler("abc", pid=PID).start()
    # wait for 10 samples taken while this thread sleeps (0.1 s on an idle machine; a busy one
    # only makes the wait longer)
    deadline = time.monotonic() + 30
    while fake.calls["memory"] < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    s.stop()
    assert s.interval_s <= 0.01
    assert fake.calls["memory"] >= 10
    assert s.result()["nvml_interval_s"] == 0.01


# -- SpanMeasurement ---------------------------------------------------------------------------

def test_eval_measurement_on_cpu_counts_images_and_nulls_gpu_fields():
    with measurement.SpanMeasurement("cpu") as m:
        # 64 MiB touched, past glibc's largest mmap threshold (32 MiB), so freeing it lowers the RSS at once: a
        # peak read as the RSS at exit falls short by far more than the 1 MiB allowed, as it did at 200 MiB
        block = np.ones(64 * MIB // 8)
        during = host.current_rss_mib()
        m.count(12)
        m.count(8)
        del block
    r = m.result()
    assert r["n_images"] == 20 and r["images_per_s"] == pytest.approx(20 / r["wall_s"])
    for key in measurement.GPU_KEYS:
        assert r[key] is None and "no GPU" in r["reasons"][key]
    assert r["peak_rss_mib"] >= during - 1  # the peak outlives the freed block


def test_eval_measurement_result_before_exit_is_an_error():
    m = measurement.SpanMeasurement("cpu")
    with pytest.raises(RuntimeError):
        m.result()


def test_eval_measurement_gpu_path_with_fake_cuda_and_nvml(monkeypatch):
    FakeNvml(monkeypatch, memory=[1000, 6000, 5000], energy_mj=[0, 64_000], procs=[[], [(PID, 4500)], []])
    monkeypatch.setattr(nvml.os, "getpid", lambda: PID)
    fake_cuda = types.SimpleNamespace(
        current_device=lambda: 0, synchronize=lambda d=None: None, reset_peak_memory_stats=lambda d=None: None,
        get_device_properties=lambda i: types.SimpleNamespace(uuid="abc"),
        max_memory_allocated=lambda d=None: 3000 * MIB, max_memory_reserved=lambda d=None: 3500 * MIB)
    monkeypatch.setattr(measurement.torch, "cuda", fake_cuda)
    with measurement.SpanMeasurement("cuda") as m:
        m.sampler.sample()
        m.count(32)
    r = m.result()
    assert r["peak_vram_mib"] == 4500 and r["peak_vram_source"].startswith("process")
    assert r["torch_max_allocated_mib"] == 3000 and r["torch_max_reserved_mib"] == 3500
    assert r["energy_j_per_image"] == pytest.approx(2.0)
    assert r["device_peak_used_mib"] == 6000 and r["peak_rss_mib"] > 0
    assert r["memory_check"]["consistent"] is True and r["memory_check"]["nvml_minus_torch_reserved_mib"] == 1000


# -- throughput and the OOM-surviving sweep ----------------------------------------------------

class CountingNet(torch.nn.Module):
    def __init__(self, oom_from=None, clock=None):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.calls, self.oom_from, self.clock = 0, oom_from, clock
        self.held = None

    def forward(self, x):
        self.calls += 1
        activations = torch.ones(x.shape[0], 1000, 100)
        self.held = weakref.ref(activations)
        if self.oom_from is not None and x.shape[0] >= self.oom_from:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        if self.clock is not None:
            self.clock.now += self.clock.step_s
        return self.conv(x).mean((2, 3))


def test_time_model_on_cpu_warms_up_then_times():
    net = CountingNet()
    row, meas = throughput.time_model(net, 2, "cpu", SyntheticInput(16), Timing(iters=3, warmup=2))
    assert net.calls == 5 and row["warmup_calls"] == 2
    lat = row["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert row["images_per_s"] > 0 and row["oom"] is False
    assert meas["n_images"] == 6
    assert row["peak_vram_mib"] is None and "no GPU" in row["reasons"]["peak_vram_mib"]
    assert row["peak_rss_mib"] > 0


@pytest.fixture()
def clock(monkeypatch):
    """time_model's clock, moved only by the model's calls (1/16 s each, exact in binary): the
    counts below follow from the code, not from how busy the machine is."""
    clock = types.SimpleNamespace(now=0.0, step_s=1 / 16)
    monkeypatch.setattr(throughput, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    return clock


def test_warmup_by_time_as_well_as_by_count(clock):
    net = CountingNet(clock=clock)
    row, _ = throughput.time_model(net, 1, "cpu", SyntheticInput(8), Timing(iters=1, warmup=1, warmup_s=0.25))
    assert row["warmup_calls"] == 4  # not just the one call asked by count: 4 x 1/16 s = 0.25 s
    assert net.calls == 4 + 1 and row["first_call_s"] == 1 / 16


def test_timed_span_lasts_at_least_min_time(clock):
    net = CountingNet(clock=clock)
    row, meas = throughput.time_model(net, 2, "cpu", SyntheticInput(16), Timing(iters=1, warmup=0, min_time_s=0.25))
    assert row["iters"] == net.calls == 4  # one call asked for, but the span had to last 0.25 s
    assert meas["n_images"] == 2 * row["iters"] and row["images_per_s"] == 2 * 4 / 0.25


def test_sweep_records_oom_frees_memory_and_goes_on():
    net = CountingNet(oom_from=4)

    def one(b):
        return throughput.time_model(net, b, "cpu", SyntheticInput(8), Timing(iters=2, warmup=0))

    rows, measurements = throughput.sweep_batch_sizes([1, 2, 4, 8, 2], one, "cpu")
    assert [r["oom"] for r in rows] == [False, False, True, True, False]
    assert [r["batch_size"] for r in rows] == [1, 2, 4, 8, 2]
    oom = rows[2]
    assert oom["images_per_s"] is None and oom["peak_vram_mib"] is None
    assert oom["reasons"]["images_per_s"] == "out of memory at this batch size"
    assert set(measurements) == {1, 2}
    assert rows[4]["images_per_s"] > 0  # a smaller batch after the OOM still runs


def test_oom_activations_are_released():
    net = CountingNet(oom_from=1)
    def timed(b):
        return throughput.time_model(net, b, "cpu", SyntheticInput(8), Timing(iters=1, warmup=0))

    rows, _ = throughput.sweep_batch_sizes([4], timed, "cpu")
    assert rows[0]["oom"] and net.held() is None  # nothing still holds the failed batch's tensors


# -- does it fit? ------------------------------------------------------------------------------

@pytest.mark.parametrize("limit,cap", [(1, 64), (37, 64), (64, 64), (100, 64), (255, 1000)])
def test_largest_fitting_batch_doubling_then_bisection(limit, cap):
    tried = []

    def fits(b):
        tried.append(b)
        return b <= limit

    best, capped = fit.largest_fitting_batch(fits, cap)
    assert best == min(limit, cap) and capped == (limit >= cap)
    assert len(tried) <= 2 * int(np.log2(cap)) + 2


def test_largest_fitting_batch_when_nothing_fits():
    assert fit.largest_fitting_batch(lambda b: False, 64) == (0, False)


def test_fit_search_with_oom_and_budget():
    def measure(work, b, device, baseline):
        if b >= 128:
            raise torch.cuda.OutOfMemoryError("fake")
        return 500.0 + 100.0 * b, "fake"

    best, capped, trials = fit.search(None, "cuda", 12288, 256, measure=measure)
    assert best == int((12288 - 500) // 100) and not capped  # 117
    assert any(t["oom"] and t["batch_size"] == 128 for t in trials)
    assert all(t["footprint_mib"] is None for t in trials if t["oom"])


def test_find_fits_needs_a_gpu_on_cpu():
    out = fit.find_fits(CountingNet(), "cpu", 12288.0, SyntheticInput(8))
    assert out["inference_max_batch"] is None and out["train_max_batch"] is None
    assert out["reasons"] == {"inference_max_batch": "needs a GPU", "train_max_batch": "needs a GPU"}


def test_find_fits_on_gpu_reports_both_searches():
    out = fit.find_fits(CountingNet(), "cuda", 1000.0, SyntheticInput(8), max_batch=64,
                        measure=lambda work, b, device, baseline: (30.0 * b, "fake"))
    assert out["inference_max_batch"] == 33 and out["train_max_batch"] == 33
    assert out["inference_trials"][0] == {"batch_size": 1, "oom": False, "footprint_mib": 30.0, "source": "fake"}


def test_train_work_runs_two_adamw_steps_on_cpu():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    net(torch.zeros(1, 3, 8, 8))
    before = [p.detach().clone() for p in net.parameters()]
    fit.train_work(net, 8, "cpu")(3)
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters()) and not net.training


@pytest.mark.parametrize("text,mib", [("12GB", 12288), ("11.5GiB", 11776), ("8000MiB", 8000), ("12", 12288),
                                      ("none", None), ("0", None)])
def test_parse_size(text, mib):
    assert fit.parse_size_mib(text) == mib


@pytest.mark.parametrize("text", ["12XB", "twelve", "-4GB"])
def test_parse_size_rejects(text):
    with pytest.raises(UserError):
        fit.parse_size_mib(text)


# -- params, FLOPs, host memory ---------------------------------------------------

def test_params_and_gflops_of_a_tiny_conv():
    net = torch.nn.Conv2d(3, 4, 3, padding=1)
    assert count_params(net) == 4 * 3 * 9 + 4
    gflops, why = count_gflops(net, 8, "cpu")
    assert why is None
    assert gflops == pytest.approx(2 * (4 * 3 * 9) * 8 * 8 / 1e9)  # 2 FLOPs per multiply-add


def test_peak_rss_fallback_note():
    mib, note = host.peak_rss_mib(was_reset=False)
    assert mib > 0 and "whole process life" in note


def test_fit_step_failing_for_another_reason_is_a_reason_not_a_crash():
    def measure(work, b, device, baseline):
        if b >= 4:
            raise ValueError("Expected more than 1 value per channel when training")
        return 10.0, "fake"

    out = fit.find_fits(CountingNet(), "cuda", 1000.0, SyntheticInput(8), measure=measure)
    assert out["inference_max_batch"] is None
    assert "failed at batch 4: ValueError" in out["reasons"]["train_max_batch"]
