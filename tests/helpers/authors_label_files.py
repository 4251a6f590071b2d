"""The authors' label files (data/coco/{train,val}_label_vectors_coco14.npy) as their code saved them."""
import io

import numpy as np


def as_authors_saved(labels):
    """A label file as their save_datalabels writes one: np.save of float64 0/1 rows."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(labels, dtype=np.float64))
    return buffer.getvalue()
