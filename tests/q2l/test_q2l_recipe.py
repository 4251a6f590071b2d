"""The authors' training values and their sources: log > config_new.json > README > parser default."""
import json

import pytest

from harness.errors import UserError
from harness.manifest import get_spec
from harness.q2l.recipe import build_recipe, parse_command, parse_log

R101 = get_spec("q2l-r101-448").arch
SWIN = get_spec("q2l-swinl-384").arch
# A log as their setup_logger writes it: the Command line, then the world size (their main()).
SWIN_LOG = """[09/16 10:02:11.339]: Command: main_mlc.py -a Q2L-SwinL-384 --dataset_dir /data/COCO14 \
--backbone swin_L_384_22k --img_size 384 --hidden_dim 1536 --dim_feedforward 1536 -b 32 --lr=1e-4 --amp \
--early-stop --epochs 40 --ema-decay 0.9998 --local_rank=0
[09/16 10:02:11.340]: Full config saved to out/config.json
[09/16 10:02:11.341]: world size: 8
[09/16 10:02:11.341]: dist.get_rank(): 0
"""


def test_readme_command_is_the_r101_recipe_and_defaults_fill_the_rest():
    r = build_recipe(R101)
    assert (r["lr"], r["batch_size"], r["epochs"], r["weight_decay"]) == (1e-4, 64, 80, 1e-2)
    assert r["amp"] and r["early_stop"] and r["dtgfl"] and r["cutout"] and r["pretrained"]
    assert (r["gamma_neg"], r["gamma_pos"], r["length"]) == (2.0, 0.0, -1)  # cut_fact never reaches their cutout
    assert r.sources["lr"] == "README training command (R101-448)"
    assert r.sources["ema_decay"].startswith("main_mlc.py default") and r["ema_decay"] == 0.9997
    assert r.world_size is None


def test_readme_sizes_are_not_another_models():
    r = build_recipe(SWIN)
    assert (r["hidden_dim"], r["dim_feedforward"], r["img_size"]) == (1536, 1536, 384)  # their issue #16
    assert r.sources["hidden_dim"].startswith("manifest")
    assert r["lr"] == 1e-4 and r.sources["lr"].startswith("README")


def test_log_gives_every_value_absent_flags_their_defaults():
    r = build_recipe(SWIN, log_text=SWIN_LOG)
    assert (r["batch_size"], r["lr"], r["epochs"], r["ema_decay"], r.world_size) == (32, 1e-4, 40, 0.9998, 8)
    assert r.sources["batch_size"] == "training log Command:"
    assert r["cutout"] is False and r["dtgfl"] is False  # not in that command: their parser's default
    assert r.sources["cutout"] == "training log (flag absent: main_mlc.py default)"


def test_log_beats_config_beats_readme():
    config = json.dumps({"lr": 2e-4, "batch_size": 16, "amp": "False", "cutout": "True", "img_size": 448,
                         "backbone": "resnet101", "hidden_dim": 2048})
    r = build_recipe(R101, config_text=config)
    assert (r["lr"], r["batch_size"], r["amp"], r["cutout"]) == (2e-4, 16, False, True)
    assert r.sources["amp"] == "config_new.json" and r.sources["epochs"].startswith("README")
    log = "Command: main_mlc.py --backbone resnet101 --img_size 448 --lr 3e-4\nworld size: 2\n"
    r = build_recipe(R101, log_text=log, config_text=config)
    assert (r["lr"], r["batch_size"], r.world_size) == (3e-4, 256, 2)  # --batch-size absent: their default 256


def test_a_file_of_another_model_is_refused():
    with pytest.raises(UserError, match="belongs to another model"):
        build_recipe(R101, log_text=SWIN_LOG)
    with pytest.raises(UserError, match="config_new.json says img_size=576"):
        build_recipe(R101, config_text=json.dumps({"img_size": 576}))


def test_sizes_the_manifest_only_assumed_yield_to_the_authors_file():
    r = build_recipe(SWIN, log_text=SWIN_LOG.replace("--dim_feedforward 1536", "--dim_feedforward 2048"))
    assert r["dim_feedforward"] == 2048 and any("dim_feedforward" in n for n in r.notes)


def test_command_parsing_as_their_argparse():
    assert parse_command("x.py -b 8 --wd=0.05 --weight-decay 0.02 --amp --nheads 8") == \
        {"batch_size": 8, "weight_decay": 0.02, "amp": True, "nheads": 8}
    with pytest.raises(ValueError):
        parse_log("no command here\n")
    assert parse_log("Command: main_mlc.py --lr 1e-4")[1] is None
