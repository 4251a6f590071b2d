"""NVML vs PyTorch peaks: what must hold, and what a broken reading looks like."""
from harness.measure.consistency import LARGE_GAP_MIB, check_memory


def reading(nvml=4000.0, allocated=3000.0, reserved=3500.0, **extra):
    return {"peak_vram_mib": nvml, "torch_max_allocated_mib": allocated, "torch_max_reserved_mib": reserved,
            "peak_vram_source": "process (NVML process list)", **extra}


def test_context_on_top_of_reserved_is_consistent():
    c = check_memory(reading())
    assert c["consistent"] is True and c["nvml_minus_torch_reserved_mib"] == 500.0
    assert c["problems"] == [] and c["notes"] == []


def test_nvml_below_reserved_means_a_missed_peak():
    c = check_memory(reading(nvml=3000.0))
    assert c["consistent"] is False and "missed the peak" in c["problems"][0]
    assert check_memory(reading(nvml=3499.0))["consistent"] is True  # within NVML's MiB rounding


def test_allocated_above_reserved_and_process_above_device_are_problems():
    c = check_memory(reading(allocated=3600.0, process_peak_vram_mib=4000.0, device_peak_used_mib=3900.0))
    assert c["consistent"] is False and len(c["problems"]) == 2
    assert "max allocated 3600" in c["problems"][0] and "process peak 4000" in c["problems"][1]


def test_a_huge_gap_is_noted_with_its_likely_cause():
    device = reading(nvml=3500.0 + LARGE_GAP_MIB + 100, peak_vram_source="device used minus baseline (NVML)")
    c = check_memory(device)
    assert c["consistent"] is True and "another process" in c["notes"][0]
    c = check_memory(reading(nvml=3500.0 + LARGE_GAP_MIB + 100))
    assert "outside PyTorch's allocator" in c["notes"][0]


def test_missing_figures_are_not_checked():
    c = check_memory(reading(nvml=None))
    assert c["consistent"] is None and "peak_vram_mib" in c["notes"][0]
    assert check_memory({})["consistent"] is None
