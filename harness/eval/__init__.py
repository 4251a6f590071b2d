"""Released checkpoints on COCO: the config of a run, the pass that scores it, its record and the whole reproduce job."""
