"""What an evaluation is asked to do: one typed value built from the command line (or a test),
passed down whole and embedded in each record as its `config` section."""
import os
from dataclasses import dataclass

from harness.errors import UserError


def max_workers() -> int:
    return 4 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class EvalConfig:
    coco_root: str
    weights: str | None = None            # a checkpoint file, "random", or None: the release
    weights_dir: str | None = None        # checkpoints placed by hand
    checkpoint_config: str | None = None  # the authors' config_new.json (Q2L), default beside the checkpoint
    trust_checkpoint: bool = False
    batch_size: int | None = None         # None: the authors' config, else the manifest's
    amp: str | None = None                # fp16 | bf16 | off; None: as the authors ran it
    device: str | None = None             # cpu | cuda | auto (None)
    tf32: str = "off"
    limit: int | None = None
    workers: int | None = None            # None: every core this process may use
    seed: int = 0                         # of --weights random
    runs_root: str = "runs"
    resume: str | None = None             # a run folder, "latest", "auto" (that of these settings, else new), or None
    keep_cache: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1 (got {self.batch_size}); leave it out for the paper's")
        if self.workers is not None and self.workers < 0:
            raise UserError(f"--workers must be 0 or more (got {self.workers}); 0 loads images in the main process")
        if self.workers is not None and self.workers > max_workers():  # 10^5 processes never start
            raise UserError(f"--workers {self.workers:,} is past the limit of {max_workers()} (4 per core of this "
                            f"machine); leave it out for one per core")
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be a positive number of images")
        if not -2**63 <= self.seed < 2**64:  # torch.manual_seed's range
            raise UserError(f"--seed {self.seed} is outside torch's seed range (-2**63 to 2**64-1); pass a smaller one")

    def names_one_model(self) -> bool:
        """Whether these settings name one model's files (a checkpoint, a config, a run to resume)."""
        return self.weights not in (None, "random") or bool(self.checkpoint_config) or \
            self.resume not in (None, "latest", "auto")
