"""Every rank question goes through harness.distributed.World: torchrun's environment, checked."""
import pytest

from harness.cli import main
from harness.distributed import World
from harness.errors import UserError


def test_without_torchrun_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    world = World.declared()
    assert (world.rank, world.size, world.main) == (0, 1, True)


def test_declared_place_is_read_without_joining_a_group(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    world = World.declared()
    assert (world.rank, world.size, world.main, world.backend) == (1, 2, False, None)


@pytest.mark.parametrize("env, says", [({"RANK": "one"}, "RANK='one' is not a whole number"),
                                       ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 of WORLD_SIZE=2"),
                                       ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0")])
def test_a_broken_torchrun_environment_is_one_line(monkeypatch, capsys, tmp_path, env, says):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=says.replace("(", r"\(")):
        World.declared()
    assert main(["eval", "q2l-r101-448", "--coco-root", str(tmp_path), "--no-progress"]) == 2
    assert says in capsys.readouterr().err
