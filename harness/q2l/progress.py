"""The bar of one training epoch: images over every process, images/s and the epoch's ETA (rank 0)."""
import contextlib

from tqdm import tqdm


@contextlib.contextmanager
def epoch_bar(total_images, epoch, epochs, enabled):
    """A tqdm bar counting images; `.update(n)` after each step. Disabled: a bar that counts nothing."""
    bar = tqdm(total=total_images, desc=f"epoch {epoch + 1}/{epochs}", unit="img", unit_scale=False,
               disable=not enabled, dynamic_ncols=True, leave=False, smoothing=0.1)
    try:
        yield bar
    finally:
        bar.close()
