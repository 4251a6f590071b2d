"""MLSPL user input: bad numbers are one-line errors before any training, a non-paper linear
phase is flagged, and the commands named in error messages exist."""
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlspl_data import synthetic_features

import harness
from harness.cli import build_parser, main
from harness.errors import UserError
from harness.mlspl.features import feature_paths
from harness.mlspl.prepare import FULL_COUNTS, load_prepared
from harness.mlspl.run import _smoke_reasons, paper_grid
from harness.mlspl.train import LINEAR_INIT


def train_cli(base, feats, runs, *extra):
    return main(["mlspl", "train", "--loss", "ROLE", "--mode", "linear", "--data", str(base / "data"),
                 "--features", str(feats), "--device", "cpu", "--out", str(runs), *extra])


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("extra, message", [
    (["--lr", "1e-3", "--batch-size", "0"], "--batch-size 0: must be a whole number >= 1"),
    (["--lr", "1e-3", "--batch-size", "-8"], "--batch-size -8: must be a whole number >= 1"),
    (["--lr", "0", "--batch-size", "8"], "--lr 0.0: must be a number > 0"),
    (["--lr", "1e-3", "--batch-size", "8", "--epochs", "0"], "--epochs 0: must be a whole number >= 1; leave "
                                                            "--epochs out for the paper's 25"),
    (["--lr", "1e-3", "--batch-size", "8", "--epochs", "-2"], "--epochs -2: must be a whole number >= 1"),
    (["--lr", "1e-3", "--batch-size", "8", "--workers", "-1"], "--workers -1: must be a whole number >= 0"),
    (["--lr", "1e-3", "--batch-size", "8", "--seed", "-1"], "--seed -1: must be a whole number from 0 to 2**64 - 1"),
    (["--init-lr", "1e-3", "--init-batch-size", "8"], "--init-lr and --init-batch-size set the linear phase of "
                                                     "mode linear-init; leave them out for mode linear"),
])
def test_bad_numbers_stop_before_training(synth, tmp_path, capsys, extra, message):
    base, feats = synth
    runs = tmp_path / "runs"
    assert train_cli(base, feats, runs, *extra) == 2
    assert message in one_error_line(capsys)
    assert not runs.exists()  # nothing started: no work folder, no record


def test_batch_larger_than_a_split_names_the_split(synth, tmp_path, capsys):
    base, feats = synth
    sizes = {k: len(v.images) for k, v in load_prepared(base / "data").items()}
    smallest = min(sizes, key=sizes.get)
    runs = tmp_path / "runs"
    assert train_cli(base, feats, runs, "--lr", "1e-3", "--batch-size", str(sizes[smallest] + 1)) == 2
    err = one_error_line(capsys)
    assert f"--batch-size {sizes[smallest] + 1} is larger than the {smallest} split ({sizes[smallest]} images)" in err
    assert f"use --batch-size N with N <= {sizes[smallest]}" in err
    assert not runs.exists()
    # A batch of exactly the smallest split fits every split.
    assert train_cli(base, feats, runs, "--lr", "1e-3", "--batch-size", str(sizes[smallest]), "--epochs", "1") == 0


def test_authors_linear_phase_larger_than_smoke_val(smoke_root, smoke_data, tmp_path):
    # ROLE's fixed linear phase uses batch 16; the smoke val split has fewer images.
    n_val = len(load_prepared(smoke_data)["val"].images)
    assert n_val < LINEAR_INIT["ROLE"][1]
    feats = synthetic_features(smoke_data, tmp_path / "feats")
    with pytest.raises(UserError, match=rf"the authors' linear-phase batch size 16 is larger than the val split "
                                        rf"\({n_val} images\).*--init-batch-size N \(flags the run smoke\), N <= "):
        train_and_evaluate_quick(smoke_data, feats, smoke_root, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def train_and_evaluate_quick(data, feats, coco_root, runs):
    from harness.mlspl.config import TrainConfig
    from harness.mlspl.run import train_and_evaluate

    return train_and_evaluate(TrainConfig("ROLE", "linear-init", data_dir=data, features_dir=feats, coco_root=coco_root,
                                          points=((4, 1e-4),), runs_root=runs, device="cpu", epochs=1, resolution=32,
                                          random_weights=True, workers=0, max_steps=1, progress=False))


def full_data():
    return {k: SimpleNamespace(images=range(n)) for k, n in FULL_COUNTS.items()}


def reasons(loss, init_point):
    from harness.mlspl.config import TrainConfig

    config = TrainConfig(loss, "fine-tuned", points=tuple(paper_grid()), epochs=10, init_point=init_point)
    return _smoke_reasons(config, {}, full_data(), None)


def test_non_paper_linear_phase_is_flagged():
    # The paper's whole setting has no reason; the authors' fixed linear phase adds none either.
    assert reasons("ROLE", None) == []
    assert reasons("ROLE", LINEAR_INIT["ROLE"]) == [] and reasons("AN-LS", list(LINEAR_INIT["AN-LS"])) == []
    assert reasons("ROLE", (1e-4, 16)) == ["linear phase lr 0.0001 bs 16, not the authors' lr 0.001 bs 16"]
    assert reasons("AN-LS", (1e-4, 16)) == ["linear phase lr 0.0001 bs 16, not the authors' lr 0.0001 bs 8"]
    assert reasons("AN", (1e-4, 8)) == ["linear phase lr 0.0001 bs 8, the authors fixed none for AN"]


def test_extract_and_compare_reject_bad_numbers(synth, tmp_path, capsys):
    base, feats = synth
    out = tmp_path / "feats"
    assert main(["mlspl", "extract-features", "--data", str(base / "data"), "--coco-root", str(tmp_path),
                 "--out", str(out), "--batch-size", "0", "--random-weights", "--device", "cpu"]) == 2
    assert "--batch-size 0: must be a whole number >= 1" in one_error_line(capsys)
    assert not out.exists()
    assert main(["mlspl", "compare-features", str(feats), str(feats), "--sample", "0"]) == 2
    assert "--sample 0: must be a whole number >= 1" in one_error_line(capsys)


def test_missing_features_message_names_real_commands(tmp_path):
    with pytest.raises(UserError) as error:
        feature_paths(tmp_path)
    commands = re.findall(r"`harness ([^`]+)`", str(error.value))
    assert {c.split()[1] for c in commands} == {"fetch-features", "extract-features"}
    for command in commands:
        args = build_parser().parse_args(shlex.split(command))  # argparse exits on an unknown command
        assert Path(args.out) == tmp_path


def test_every_mlspl_action_named_in_the_code_exists(capsys):
    root = Path(harness.__file__).parent
    named = set()
    for path in [*root.glob("mlspl/*.py"), root / "commands" / "mlspl.py"]:
        named.update(re.findall(r"harness mlspl ([\w-]+)", path.read_text()))
    assert named
    for action in named:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args(["mlspl", action, "--help"])
        assert done.value.code == 0, f"`harness mlspl {action}` is not a command"
