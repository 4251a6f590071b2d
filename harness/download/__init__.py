"""Downloads: released checkpoints, the MLSPL features and COCO 2014, verified, cached and resumable.

- fetch(spec, role): one file of a model (weights.py): files placed by hand, the cache
  (<HARNESS_HOME>/weights/<model id>/<filename>), then the manifest's sources in order.
- fetch_url(url, dest): one file from one URL, checked against published size/md5/sha256.
- fetch_mlspl_features(): the MLSPL authors' features from Zenodo.
- fetch_coco(root, splits): COCO 2014 archives, unpacked and checked against the annotations.
Nothing is used before it is verified; a bad file is renamed <name>.corrupt-<time>.
"""
from harness.download.coco import fetch_coco
from harness.download.features import features_dir, fetch_mlspl_features
from harness.download.settings import harness_home, is_offline
from harness.download.url import fetch_url
from harness.download.weights import cache_path, fetch

__all__ = ["fetch", "fetch_url", "fetch_coco", "fetch_mlspl_features", "features_dir",
           "cache_path", "harness_home", "is_offline"]
