"""How far the harness's training steps move from the committed fixture when the numerics change: the
bounds tests/q2l/test_q2l_authors_loop.py allows, measured, not guessed (no authors' code needed).

    python tests/data/q2l_authors/measure_drift.py [--save FILE | --load FILE]

Runs check_train_loop.harness_side() in a child process under each setting below (thread count, ATen's
vector width, MKL's code path: what differs between CPU models), then once more with real changes under
the default numerics (lr x 1.1; the EMA decay 0.9998 instead of 0.9997), and prints per run the drift
measures of `drift()`: what the bounds must exceed, and what they must stay below.
"""
import argparse
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
CHANGES = {"lr x 1.1": {"lr_scale": 1.1}, "EMA decay 0.9998": {"ema_decay": 0.9998}}
FIGURES = ("train_loss", "val_loss", "val_loss_ema", "mAP", "mAP_ema")
THEIR_MAPS = {"mAP": "mAP_finite_classes", "mAP_ema": "mAP_ema_finite_classes"}


def drift(arrays, history, fixture, their_history):
    """{measure: value}: the model's and the EMA's sampled arrays, the difference from the fixture in L2
    norm relative to how far training moved the MODEL's array (|trained - initial|: the EMA moves far less,
    so its own movement is no scale); each epoch's losses and mAPs relative to theirs (worst epoch)."""
    out = {"model": 0.0, "ema": 0.0}
    for key in fixture.files:
        part, name = key.split("/", 1)
        if part == "initial":
            continue
        moved = np.linalg.norm(fixture[f"model/{name}"] - fixture[f"initial/{name}"])
        out[part] = max(out[part], float(np.linalg.norm(np.asarray(arrays[key]) - fixture[key]) / moved))
    for f in FIGURES:
        out[f] = max(abs(o[f] - t[THEIR_MAPS.get(f, f)]) / abs(t[THEIR_MAPS.get(f, f)])
                     for o, t in zip(history, their_history))
    return out


def child(changes):
    sys.path.insert(0, str(HERE))
    import check_train_loop

    images, arrays, history = check_train_loop.harness_side(**changes)
    print(json.dumps({"images": images, "arrays": {k: v.tolist() for k, v in arrays.items()}, "history": history}))


def runs():
    """(name, env changes, harness changes) of every run."""
    for threads, capability, mkl in itertools.product(THREADS, CAPABILITIES, MKL):
        env = dict(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, ATEN_CPU_CAPABILITY=capability)
        if mkl:
            env["MKL_CBWR"] = mkl
        yield f"threads {threads} aten {capability:8s} MKL_CBWR {mkl or '-':10s}", env, {}
    for name, changes in CHANGES.items():
        yield f"REAL CHANGE: {name:27s}", {}, changes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", help="keep the children's outputs in this JSON file")
    parser.add_argument("--load", help="measure the outputs a --save kept instead of training again")
    args = parser.parse_args()
    fixture = np.load(HERE / "train_loop.npz")
    theirs = json.loads((HERE / "train_loop.json").read_text())
    saved = json.loads(Path(args.load).read_text()) if args.load else {}
    worst = {}
    for name, env_changes, changes in runs():
        if name not in saved:
            env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
            env.update(PYTHONPATH=str(HERE.parents[2]), **env_changes)
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(changes)], env=env,
                                 capture_output=True, text=True, check=True)
            saved[name] = json.loads(out.stdout.strip().splitlines()[-1])
        ours = saved[name]
        assert ours["images"] == theirs["images_sha256"]
        found = drift(ours["arrays"], ours["history"], fixture, theirs["history"])
        if not changes and not name.startswith("REAL"):
            worst = {k: max(v, worst.get(k, 0.0)) for k, v in found.items()}
        print(f"{name} " + "  ".join(f"{k} {v:.2e}" for k, v in found.items()), flush=True)
    print("worst over the numerics: " + "  ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    if args.save:
        Path(args.save).write_text(json.dumps(saved))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(json.loads(sys.argv[2]))
    else:
        main()
