"""How far the harness's linear training moves from the committed fixture when the numerics change:
the bound that tests/test_mlspl_authors.py allows, measured, not guessed (no authors' code needed).

    python tests/data/mlspl_authors/measure_drift.py

Runs `make_fixtures.harness_training()` in a child process under each setting below (thread count,
ATen's vector width, MKL's and oneDNN's code paths: what differs between CPU models) and prints, per
setting, the largest difference from training.npz relative to each array's largest magnitude, the
largest mAP difference, and whether every best epoch held.
"""
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
THREADS = ("1", "2")
CAPABILITIES = ("default", "avx2", "avx512")
MKL = (None, "COMPATIBLE", "AVX2", "AVX512")


def drift(ours, fixture, runs):
    """(max relative array difference, max |mAP difference|, best epochs all equal)."""
    array_diff, map_diff, epochs_equal = 0.0, 0.0, True
    for run in runs:
        key = f"{run['loss']}-{run['batch_size']}-{run['lr']:g}"
        r = ours[key]
        epochs_equal &= r["best_epoch"] == run["best_epoch"]
        map_diff = max(map_diff, *np.abs(np.subtract(r["val_mAP"], run["val_mAP"])),
                       abs(r["test_mAP"] - run["test_mAP"][run["best_epoch"]]))
        for name, value in r["arrays"].items():
            expected = fixture[f"{key}/{name}"]
            array_diff = max(array_diff, float(np.abs(np.asarray(value) - expected).max() / np.abs(expected).max()))
    return array_diff, map_diff, epochs_equal


def child():
    sys.path.insert(0, str(HERE))
    import make_fixtures

    ours = make_fixtures.harness_training()
    print(json.dumps({k: {**v, "arrays": {n: a.tolist() for n, a in v["arrays"].items()}} for k, v in ours.items()}))


def main():
    runs = json.loads((HERE / "training.json").read_text())["runs"]
    fixture = np.load(HERE / "training.npz")
    worst = (0.0, 0.0)
    for threads, capability, mkl in itertools.product(THREADS, CAPABILITIES, MKL):
        env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, ATEN_CPU_CAPABILITY=capability,
                   PYTHONPATH=str(HERE.parents[2]))
        if mkl:
            env["MKL_CBWR"] = mkl
        out = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True)
        array_diff, map_diff, epochs_equal = drift(json.loads(out.stdout), fixture, runs)
        worst = (max(worst[0], array_diff), max(worst[1], map_diff))
        print(f"threads {threads} aten {capability:8s} MKL_CBWR {mkl or '-':10s} arrays {array_diff:.2e} "
              f"mAP {map_diff:.2e} best epochs {'equal' if epochs_equal else 'DIFFER'}")
    print(f"worst: arrays {worst[0]:.2e} of their largest magnitude, mAP {worst[1]:.2e}")


if __name__ == "__main__":
    child() if sys.argv[1:] == ["--child"] else main()
