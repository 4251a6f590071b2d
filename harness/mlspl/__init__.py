"""Single-positive multi-label learning (Cole et al., CVPR 2021), rebuilt from the authors' code.

prepare.py  the authors' formatted label files, single positives and train/val split
config.py   TrainConfig (what one run is asked to do) and FeatureConfig (an extraction)
features.py ResNet-50 features: the authors' download or our extraction, and a comparison;
            ImageRows, the images of extraction and fine-tuning (uint8, the shared loader)
losses.py   AN, AN-LS, WAN, EPR, ROLE and full-label BCE
train.py    linear (batched grid on features), fine-tuned and linear-init training
ddp.py      fine-tuning on several processes (torchrun): shares of one global batch, one update
run.py      one reproduction: grid, selection on val, test scores, record
record.py   the run record's checkpoints and fields
"""
