"""The authors' training values for one Query2Label model, each with where it came from.

Sources, strongest first (the first that has a model's value wins, and the record names it):
  log          the authors' training log (their cloud share, `Q2L-logs`): its `Command:` line, read as
               main_mlc.py's parser reads it; a flag the command leaves out had its parser default,
               and `world size: N` gives the processes (their --batch-size is the global batch)
  config       the release's config_new.json (a dump of their arguments; booleans may be "False")
  readme       the README's training command (R101-448; its sizes only for the ResNet-101 models)
  manifest     the released model's architecture (hidden = backbone channels: their issue #16)
  default      main_mlc.py's parser default at 55eb050 (their --lr default is 0.1: a trap)
"""
import json
import shlex
from dataclasses import dataclass, field

from harness.download import fetch
from harness.download.weights import lock_verified
from harness.errors import UserError
from harness.q2l.files import training_log_spec

# Their parser's dests -> (type, default at 55eb050). Only values that move a training.
DEFAULTS = {
    "backbone": (str, "resnet101"), "img_size": (int, 448), "num_class": (int, 80), "pretrained": (bool, False),
    "optim": (str, "AdamW"), "eps": (float, 1e-5), "dtgfl": (bool, False), "gamma_pos": (float, 0.0),
    "gamma_neg": (float, 2.0), "loss_dev": (float, -1.0), "loss_clip": (float, 0.0), "epochs": (int, 80),
    "val_interval": (int, 1), "batch_size": (int, 256), "lr": (float, 0.1), "weight_decay": (float, 1e-2),
    "ema_decay": (float, 0.9997), "ema_epoch": (int, 0), "cutout": (bool, False), "n_holes": (int, 1),
    "length": (int, -1), "cut_fact": (float, 0.5), "orid_norm": (bool, False), "enc_layers": (int, 1),
    "dec_layers": (int, 2), "dim_feedforward": (int, 8192), "hidden_dim": (int, 2048), "dropout": (float, 0.1),
    "nheads": (int, 4), "pre_norm": (bool, False), "position_embedding": (str, "sine"),
    "keep_other_self_attn_dec": (bool, False), "keep_first_self_attn_dec": (bool, False),
    "keep_input_proj": (bool, False), "amp": (bool, False), "early_stop": (bool, False),
}
# Their flags (every spelling) -> dest; store_true flags take no value.
FLAGS = {"--img_size": "img_size", "--num_class": "num_class", "--pretrained": "pretrained", "--optim": "optim",
         "--eps": "eps", "--dtgfl": "dtgfl", "--gamma_pos": "gamma_pos", "--gamma_neg": "gamma_neg",
         "--loss_dev": "loss_dev", "--loss_clip": "loss_clip", "--epochs": "epochs", "--val_interval": "val_interval",
         "-b": "batch_size", "--batch-size": "batch_size", "--lr": "lr", "--learning-rate": "lr",
         "--wd": "weight_decay", "--weight-decay": "weight_decay", "--ema-decay": "ema_decay",
         "--ema-epoch": "ema_epoch", "--cutout": "cutout", "--n_holes": "n_holes", "--length": "length",
         "--cut_fact": "cut_fact", "--orid_norm": "orid_norm", "--enc_layers": "enc_layers",
         "--dec_layers": "dec_layers", "--dim_feedforward": "dim_feedforward", "--hidden_dim": "hidden_dim",
         "--dropout": "dropout", "--nheads": "nheads", "--pre_norm": "pre_norm",
         "--position_embedding": "position_embedding", "--backbone": "backbone",
         "--keep_other_self_attn_dec": "keep_other_self_attn_dec",
         "--keep_first_self_attn_dec": "keep_first_self_attn_dec", "--keep_input_proj": "keep_input_proj",
         "--amp": "amp", "--early-stop": "early_stop"}
# The README's single-GPU command for Q2L-R101-448 (the only training command they publish).
README_COMMAND = ("main_mlc.py --backbone resnet101 --dataname coco14 --batch-size 64 --print-freq 100 "
                  "--world-size 1 --rank 0 --dist-url tcp://127.0.0.1:3717 --gamma_pos 0 --gamma_neg 2 --dtgfl "
                  "--epochs 80 --lr 1e-4 --optim AdamW --pretrained --num_class 80 --img_size 448 "
                  "--weight-decay 1e-2 --cutout --n_holes 1 --cut_fact 0.5 --hidden_dim 2048 "
                  "--dim_feedforward 8192 --enc_layers 1 --dec_layers 2 --nheads 4 --early-stop --amp")
AUTHORS_FILES = ("training log", "config_new.json")
STRICT = ("backbone", "img_size", "hidden_dim")  # certain from the release: another value is another model
README_SIZES = ("backbone", "img_size", "hidden_dim", "dim_feedforward")  # R101-448's own, not a recipe
# What the manifest's architecture says, in their names.
ARCH_KEYS = {"backbone": "backbone", "img_size": "img_size", "hidden_dim": "hidden_dim",
             "dim_feedforward": "dim_feedforward", "enc_layers": "enc_layers", "dec_layers": "dec_layers",
             "nheads": "nheads"}


@dataclass(frozen=True)
class Recipe:
    """The authors' values (`values[name]`), where each came from (`sources[name]`), and the world size
    their run had (None when no log says)."""
    values: dict
    sources: dict
    world_size: int | None = None
    notes: tuple = field(default=())

    def __getitem__(self, name):
        return self.values[name]

    def as_json(self):
        return {"values": self.values, "sources": self.sources, "world_size": self.world_size,
                "notes": list(self.notes)}


def coerce(name, value):
    """One value as their parser would hold it; a config's "False" string is False."""
    kind = DEFAULTS[name][0]
    if kind is bool:
        if isinstance(value, str):
            if value.strip().lower() not in ("true", "false"):
                raise ValueError(f"{name}={value!r} is not a boolean")
            return value.strip().lower() == "true"
        return bool(value)
    return kind(value)


def parse_command(command):
    """{dest: value} of the training flags in one main_mlc.py command line (the others are skipped)."""
    tokens = shlex.split(command)
    out, i = {}, 0
    while i < len(tokens):
        flag, _, inline = tokens[i].partition("=")
        i += 1
        dest = FLAGS.get(flag)
        if dest is None:
            continue
        if DEFAULTS[dest][0] is bool:
            out[dest] = True
            continue
        if inline:
            value = inline
        elif i < len(tokens):
            value, i = tokens[i], i + 1
        else:
            raise ValueError(f"{flag} has no value")
        out[dest] = coerce(dest, value)
    return out


def parse_log(text):
    """(every value of the logged run, world size or None) from a main_mlc.py log: its `Command:`
    line read as their parser (absent flags: their defaults) and its `world size: N` line."""
    command = next((line.split("Command:", 1)[1] for line in text.splitlines() if "Command:" in line), None)
    if command is None:
        raise ValueError("no 'Command:' line (not a main_mlc.py training log)")
    given = parse_command(command)
    world = next((int(line.rsplit(":", 1)[1]) for line in text.splitlines()
                  if line.rstrip().rsplit(":", 1)[0].endswith("world size") and line.rsplit(":", 1)[1].strip().isdigit()),
                 None)
    return given, world


def parse_config(text):
    """{dest: value} of the training values in a config_new.json."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return {k: coerce(k, v) for k, v in data.items() if k in DEFAULTS and v is not None}


def build_recipe(arch, log_text=None, config_text=None, unavailable=()):
    """The Recipe of a model whose manifest architecture is `arch`, from the texts that could be had
    (None: not available; `unavailable`: why, recorded as notes)."""
    values = {k: v for k, (_, v) in DEFAULTS.items()}
    sources = dict.fromkeys(values, "main_mlc.py default (55eb050)")
    notes = list(unavailable)
    for dest, name in ARCH_KEYS.items():
        if name in arch:
            values[dest], sources[dest] = arch[name], "manifest architecture (the released model)"
    readme = parse_command(README_COMMAND)
    is_r101 = arch.get("backbone") == "resnet101"
    for k, v in readme.items():
        if k in README_SIZES and not (is_r101 and (k != "img_size" or arch.get("img_size") == v)):
            continue  # R101-448's sizes are not another model's
        values[k], sources[k] = v, "README training command (R101-448)"
    if config_text is not None:
        for k, v in parse_config(config_text).items():
            values[k], sources[k] = v, "config_new.json"
    world = None
    if log_text is not None:
        given, world = parse_log(log_text)
        for k in values:
            values[k] = given.get(k, DEFAULTS[k][1])
            sources[k] = "training log Command:" if k in given else "training log (flag absent: main_mlc.py default)"
    _check_model(arch, values, sources, notes)
    return Recipe(values, sources, world, tuple(notes))


def _check_model(arch, values, sources, notes):
    """A log or config of another model (another backbone, resolution or hidden size) is refused: its
    values are not this model's. Other sizes of the manifest are assumptions: the authors' file wins."""
    for dest, name in ARCH_KEYS.items():
        if name not in arch or values[dest] == arch[name] or not sources[dest].startswith(AUTHORS_FILES):
            continue
        if dest in STRICT:
            which = "config_new.json" if sources[dest].startswith("config") else "training log"
            raise UserError(f"the authors' {which} says {dest}="
                            f"{values[dest]} but {arch.get('release_folder', 'this model')} has {arch[name]}: it "
                            f"belongs to another model; remove it (or place this model's)")
        notes.append(f"{dest}: {values[dest]} ({sources[dest]}), the manifest assumed {arch[name]}")


def load_recipe(spec, *, weights_dir=None, cache_dir=None, fetch_files=True):
    """The Recipe of manifest entry `spec`: the authors' training log (manifest `training_logs`) and the
    release's config_new.json fetched (verified; an unpinned sha256 locked once parsed) when listed;
    `fetch_files=False` (smoke runs) reads neither. A file that cannot be had is a note, and the next
    source decides."""
    wanted = {"train_log": training_log_spec(spec), "config": spec if "config" in spec.files else None}
    texts, paths, unavailable = {}, {}, []
    for role, owner in wanted.items() if fetch_files else ():
        if owner is None:
            unavailable.append(f"{role}: the manifest lists no source")
            continue
        try:
            paths[role] = (owner, fetch(owner, role, weights_dir=weights_dir, cache_dir=cache_dir, quiet=True,
                                        lock=False))
            texts[role] = paths[role][1].read_text(encoding="utf-8", errors="replace")
        except UserError as e:
            unavailable.append(f"{role}: {e}")
    if not fetch_files:
        unavailable.append("smoke run: the authors' log and config_new.json were not read")
    try:
        recipe = build_recipe(spec.arch, texts.get("train_log"), texts.get("config"), unavailable)
    except ValueError as e:
        raise UserError(f"{spec.id}: an authors' file could not be read ({e}); delete it from the cache and run again")
    for role, (owner, path) in paths.items():  # parsed and of this model: now its hash may be locked
        lock_verified(owner, role, path, quiet=True)
    return recipe
