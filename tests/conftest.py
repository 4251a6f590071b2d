import pytest

from harness.data.smoke import make_smoke


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory):
    """One smoke subset for the whole test session (24 val + 48 train images)."""
    return make_smoke(tmp_path_factory.mktemp("smoke"), n_val=24, n_train=48, seed=0)
