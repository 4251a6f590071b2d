"""Make the MLSPL fidelity fixtures by running the authors' code (not run in CI).

    python tests/data/mlspl_authors/make_fixtures.py PATH/TO/single-positive-multi-label

PATH is a checkout of elijahcole/single-positive-multi-label (checked at commit 89152d5). Their
files are imported as they are; numpy aliases their code names (np.bool, np.Inf) are put back where
a numpy version removed them. Writes beside this script:
  losses.npz    gradients of their compute_batch_loss (every loss, float32) on the inputs of
                `loss_inputs()`; ROLE's also for the label estimates.
  logits.npz    their inverse_sigmoid of `estimate_inputs()` (linear-init's table start).
  training.json their train.py loop (initialize_training_run + train, linear mode on `tiny_data()`,
                under PORTABLE_NUMERICS) with one line added, torch.manual_seed(P['seed']) as the first line of
                initialize_training_run: per run the train batches (row indices), the val and test
                mAP of every epoch, the best epoch, sha256 of the best weights (float32 bytes) and of the
                test scores at the best epoch. Also the torch and numpy versions it ran with.
  training.npz  the best weights themselves (`sampled_weight`: every WEIGHT_STRIDE-th input column),
                bias, ROLE table and test scores of each run, for the portable test (a bound, not bits).
Then it runs the harness's training (`harness_training()`) on the same data in the same process and
ASSERTS that every weight, table, score and mAP equals theirs bit for bit: on the machine where their
code runs, the harness gives their bits. The committed test cannot ask for bits: a float32 matmul's
bits move with the CPU model, its vector width and the thread count (the same code gave other bits on
an AMD EPYC than on the machine that made the fixture, under every numerics flag tried), so it compares
the floats with a bound measured across those (see the test) and the integer draws bit for bit.
The inputs come from numpy's PCG64 here, so the tests regenerate them with these functions.
Run with a torch before 2.0 (e.g. the authors' torch 1.7.0), each file name gets that version as a
suffix (training_torch1.7.json): the tests replay those batch orders with that torch's semantics.
"""
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OLD_TORCH_SUFFIX = "_torch{}"  # + major.minor, for files made with torch < 2
LOSS_NAMES = {"BCE": "bce", "AN": "an", "AN-LS": "an_ls", "WAN": "wan", "EPR": "epr", "ROLE": "role"}
N, L, K, GRID, BATCHES = 8, 80, 2.9, 2, 2
TRAIN_RUNS = [("AN", 8, 1e-2), ("AN", 8, 1e-3), ("ROLE", 8, 1e-2), ("ROLE", 8, 1e-3), ("ROLE", 16, 1e-3)]
EPOCHS, SEED = 3, 1200
WEIGHT_STRIDE = 32  # training.npz keeps every 32nd input column of the (80, 2048) weights
TRAINED = [("AN", 8), ("ROLE", 8), ("ROLE", 16)]  # (loss, batch size) groups of TRAIN_RUNS
# The bits of a float32 matmul depend on the CPU's vector width and the thread count. These settings
# (MKL's conditional numerical reproducibility, ATen's and oneDNN's plain kernels, one thread) give
# the same bits on every x86 machine; the script and the test that replays it run under them.
PORTABLE_NUMERICS = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                     "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def loss_inputs(name, batch):
    """(observed (N, L), preds (GRID, N, L), estimates (GRID, N, L)) float32: GRID problems sharing rows."""
    rng = np.random.default_rng([7, batch, list(LOSS_NAMES).index(name)])
    observed = np.zeros((N, L), np.float32)
    if name == "BCE":
        observed[rng.random((N, L)) < 0.05] = 1
    observed[np.arange(N), rng.integers(0, L, N)] = 1
    preds = rng.uniform(0.001, 0.999, (GRID, N, L)).astype(np.float32)
    estimates = rng.uniform(0.001, 0.999, (GRID, N, L)).astype(np.float32)
    return observed, preds, estimates


def estimate_inputs():
    """Label estimates as a linear phase leaves them: sigmoid outputs, some saturated at 0 or 1."""
    rng = np.random.default_rng(11)
    p = 1 / (1 + np.exp(-rng.normal(0, 6, (50, L))))
    return p.astype(np.float32)


def tiny_data():
    """A COCO-shaped toy set: 100 train2014 rows (split 80/20 by their code), 40 val2014 rows (test)."""
    rng = np.random.default_rng(3)
    out = {}
    for phase, n in (("train", 100), ("val", 40)):
        labels = (rng.random((n, L)) < 0.06).astype(np.float32)
        labels[np.arange(n), rng.integers(0, L, n)] = 1
        obs = np.zeros_like(labels)
        for i in range(n):
            obs[i, rng.choice(np.flatnonzero(labels[i]))] = 1
        feats = (labels @ rng.normal(size=(L, 2048)) / 8 + rng.normal(size=(n, 2048))).astype(np.float32)
        out[phase] = {"labels": labels, "labels_obs": obs, "feats": feats,
                      "images": np.array([f"{phase}2014/{i:04d}.jpg" for i in range(n)])}
    return out


def _their_modules(checkout):
    for name, value in (("bool", np.bool_), ("Inf", np.inf)):  # gone in some numpy versions; their code names them
        if not hasattr(np, name):
            setattr(np, name, value)
    sys.path.insert(0, str(checkout))
    import losses
    import train
    return losses, train


def make_losses(their_losses):
    import torch

    out = {}
    for name, key in LOSS_NAMES.items():
        P = {"loss": key, "train_set_variant": "clean" if name == "BCE" else "observed", "num_classes": L,
             "expected_num_pos": K, "ls_coef": 0.1}
        for b in range(BATCHES):
            observed, preds, estimates = loss_inputs(name, b)
            for g in range(GRID):
                p = torch.tensor(preds[g], requires_grad=True)
                e = torch.tensor(estimates[g], requires_grad=True)
                batch = {"preds": p, "label_vec_obs": torch.tensor(observed), "label_vec_est": e}
                their_losses.compute_batch_loss(batch, P, {})["loss_tensor"].backward()
                out.setdefault(f"{name}_grad_preds", np.zeros_like(preds[None].repeat(BATCHES, 0)))[b, g] = p.grad
                if name == "ROLE":
                    out.setdefault("ROLE_grad_estimates", np.zeros_like(preds[None].repeat(BATCHES, 0)))[b, g] = e.grad
    np.savez_compressed(_out("losses.npz"), **out)


def make_logits(checkout):
    import torch

    sys.path.insert(0, str(checkout))
    import models

    np.savez_compressed(_out("logits.npz"),
                        logits=np.asarray(models.inverse_sigmoid(torch.FloatTensor(estimate_inputs()))))


def make_training(train):
    import torch

    start = train.initialize_training_run

    def seeded_start(P, *args, **kwargs):
        torch.manual_seed(P["seed"])  # the one line added to their train.py
        return start(P, *args, **kwargs)

    train.initialize_training_run = seeded_start
    runs, kept = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.makedirs("data/coco")
        for phase, arrays in tiny_data().items():
            for key in ("labels", "labels_obs", "images"):
                np.save(f"data/coco/formatted_{phase}_{key}.npy", arrays[key])
            np.save(f"data/coco/{phase}_features_imagenet_resnet50.npy", arrays["feats"])
        for loss, bsize, lr in TRAIN_RUNS:
            P = {"dataset": "coco", "loss": loss.lower(), "train_mode": "linear_fixed_features",
                 "val_set_variant": "clean", "load_path": "./data", "save_path": f"./results/{loss}_{bsize}_{lr}",
                 "lr_mult": 10.0, "stop_metric": "map", "ls_coef": 0.1, "seed": SEED, "use_pretrained": True,
                 "num_workers": 0, "split_seed": 1200, "val_frac": 0.2, "ss_seed": 999, "ss_frac_train": 1.0,
                 "ss_frac_val": 1.0, "train_set_variant": "observed", "num_epochs": EPOCHS,
                 "freeze_feature_extractor": True, "use_feats": True, "arch": "linear",
                 "feature_extractor_arch": "resnet50", "feat_dim": 2048, "expected_num_pos": K, "bsize": bsize,
                 "lr": lr, "train_feats_file": "./data/coco/train_features_imagenet_resnet50.npy",
                 "val_feats_file": "./data/coco/val_features_imagenet_resnet50.npy"}
            P, Z, model = train.initialize_training_run(P, None, None, None)
            model.to(Z["device"])
            batches = []
            _, model, logger, best_f, best_g = _train_recording(train, model, P, Z, batches)
            logs = logger.get_logs()["metrics"]
            runs.append({"loss": loss, "batch_size": bsize, "lr": lr, "train_batches": batches,
                         "val_mAP": [logs["val"][e]["map_clean"] for e in range(EPOCHS)],
                         "test_mAP": [logs["test"][e]["map_clean"] for e in range(EPOCHS)],
                         "best_epoch": int(logger.best_epoch),
                         "best_weight_sha256": _sha(best_f["linear_classifier.fc.weight"]),
                         "best_bias_sha256": _sha(best_f["linear_classifier.fc.bias"]),
                         "best_table_sha256": _sha(best_g["logits"]) if loss == "ROLE" else None,
                         "best_test_scores_sha256": _sha(torch.tensor(logger.get_logs()["best_preds"]["test"]))})
            best = {"sampled_weight": best_f["linear_classifier.fc.weight"][:, ::WEIGHT_STRIDE],
                    "bias": best_f["linear_classifier.fc.bias"],
                    "test_scores": torch.tensor(logger.get_logs()["best_preds"]["test"])}
            if loss == "ROLE":
                best["table"] = best_g["logits"]
            kept.update({f"{run_key(loss, bsize, lr)}/{k}": v.detach().cpu().numpy() for k, v in best.items()})
    _out("training.json").write_text(json.dumps({"torch": torch.__version__, "numpy": np.__version__,
                                                    "numerics": PORTABLE_NUMERICS, "epochs": EPOCHS,
                                                    "seed": SEED, "runs": runs}, indent=1) + "\n")
    np.savez_compressed(_out("training.npz"), **kept)
    return runs, kept


def run_key(loss, batch_size, lr):
    return f"{loss}-{batch_size}-{lr:g}"


def tiny_splits():
    """The toy set, split by the harness as by their datasets.py: (train, val, test)."""
    import torch

    from harness.mlspl.prepare import split_train_val

    data = tiny_data()
    train_rows, val_rows = split_train_val(len(data["train"]["labels"]))
    source, test = data["train"], data["val"]
    observed = torch.from_numpy(source["labels_obs"][train_rows])
    return ((torch.from_numpy(source["feats"][train_rows]), observed),
            (torch.from_numpy(source["feats"][val_rows]), source["labels"][val_rows]),
            (torch.from_numpy(test["feats"]), test["labels"]))


def harness_training():
    """The harness's grid (all lrs of a loss and batch size at once) on the runs of TRAIN_RUNS:
    {run_key: {"best_epoch", "val_mAP" (per epoch), "test_mAP", "arrays": as training.npz}}."""
    from harness.mlspl.config import TrainConfig
    from harness.mlspl.train import train_linear_group

    train, val, test = tiny_splits()
    out = {}
    for loss, batch_size in TRAINED:
        lrs = [lr for name, b, lr in TRAIN_RUNS if (name, b) == (loss, batch_size)]
        config = TrainConfig(loss, epochs=EPOCHS, seed=SEED)
        for lr, r in zip(lrs, train_linear_group(train, val, test, config, batch_size, lrs)):
            arrays = {"sampled_weight": r.head["weight"].numpy()[:, ::WEIGHT_STRIDE], "bias": r.head["bias"].numpy(),
                      "test_scores": np.asarray(r.test_scores)}
            if loss == "ROLE":
                arrays["table"] = r.table.numpy()
            out[run_key(loss, batch_size, lr)] = {"best_epoch": r.best_epoch, "test_mAP": r.test_map,
                                                  "val_mAP": [h["val_mAP"] for h in r.history], "arrays": arrays}
    return out


def assert_harness_equals_theirs_bit_for_bit(runs, arrays):
    """On the machine that ran their code: the harness's training gives their bits, every one."""
    ours = harness_training()
    for run in runs:
        key = run_key(run["loss"], run["batch_size"], run["lr"])
        r = ours[key]
        assert r["best_epoch"] == run["best_epoch"], key
        # mAP: the harness's own average precision against sklearn's, equal to float64 rounding
        np.testing.assert_allclose(r["val_mAP"], run["val_mAP"], rtol=1e-14)
        np.testing.assert_allclose(r["test_mAP"], run["test_mAP"][run["best_epoch"]], rtol=1e-14)
        for name, value in r["arrays"].items():
            assert np.array_equal(value, arrays[f"{key}/{name}"]), (key, name)


def _train_recording(train, model, P, Z, batches_by_epoch):
    """Their train(), with the row indices of each train batch kept per epoch."""
    run_train_phase = train.run_train_phase

    def recording(model, P, Z, logger, epoch, phase):
        batches_by_epoch.append([])
        loader = Z["dataloaders"]["train"]
        Z["dataloaders"]["train"] = _Recorder(loader, batches_by_epoch[-1])
        try:
            return run_train_phase(model, P, Z, logger, epoch, phase)
        finally:
            Z["dataloaders"]["train"] = loader

    train.run_train_phase = recording
    try:
        return train.train(model, P, Z)
    finally:
        train.run_train_phase = run_train_phase


class _Recorder:
    """Iterates the loader itself (its random draws unchanged) and notes each batch's rows."""

    def __init__(self, loader, into):
        self.loader, self.into = loader, into

    def __iter__(self):
        for batch in self.loader:
            self.into.append([int(i) for i in batch["idx"]])
            yield batch


def _out(name):
    import torch

    version = torch.__version__.split("+")[0]
    stem, ext = name.split(".")
    suffix = "" if int(version.split(".")[0]) >= 2 else OLD_TORCH_SUFFIX.format(".".join(version.split(".")[:2]))
    return HERE / f"{stem}{suffix}.{ext}"


def _sha(t):
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def run_with_portable_numerics(argv):
    """Re-run this process under PORTABLE_NUMERICS (they must be set before torch loads)."""
    if any(os.environ.get(k) != v for k, v in PORTABLE_NUMERICS.items()):
        os.execve(sys.executable, [sys.executable, *argv], {**os.environ, **PORTABLE_NUMERICS})


if __name__ == "__main__":
    run_with_portable_numerics(sys.argv)
    checkout = Path(sys.argv[1]).resolve()
    their_losses, train = _their_modules(checkout)
    make_losses(their_losses)
    make_logits(checkout)
    runs, arrays = make_training(train)
    import torch

    if int(torch.__version__.split(".")[0]) >= 2:  # the harness needs torch 2; older runs keep their batch orders
        assert_harness_equals_theirs_bit_for_bit(runs, arrays)
        print("the harness's training equals theirs bit for bit on this machine")
    print("wrote", ", ".join(_out(name).name for name in ("losses.npz", "logits.npz", "training.json", "training.npz")))
