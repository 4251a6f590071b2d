"""Every record names the Pillow and JPEG decoder that read its images (they move pixels by 1/255)."""
import PIL
from PIL import features

from harness import records


def test_environment_names_pillow_and_libjpeg_turbo():
    env = records.environment()
    assert env["pillow"] == PIL.__version__
    assert env["libjpeg_turbo"] == features.version_feature("libjpeg_turbo")
    assert env["libjpeg"] == features.version_codec("jpg")
    assert env["libjpeg_turbo"] or env["libjpeg"]  # this Pillow reads JPEGs: one of them is known


def test_q2l_original_environment_pins_a_2021_pillow():
    from harness.manifest import REPO_ROOT

    text = (REPO_ROOT / "environments" / "q2l-original.yml").read_text()
    assert "pillow==8.3.2" in text.lower()
