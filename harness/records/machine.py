"""What a record says of the machine and code that made it: library versions, GPU, CPU, commit."""
import functools
import platform
import re
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import PIL
import pynvml
from PIL import features

from harness import __version__
from harness.inputs import environment as variables

try:
    from harness import _version as built  # written by setuptools-scm at install time
except ImportError:  # a source tree never installed
    built = None  # type: ignore[assignment, unused-ignore]  # used only where _version.py exists
from harness.manifest import PACKAGE_DATA, REPO_ROOT


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache  # read once per process: the code it runs was loaded as the checkout was when it started
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO_ROOT), *args],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def built_from() -> tuple[str | None, bool | None]:
    """(commit, dirty) that harness/_version.py names (None, None without one: a source tree never
    installed, or a version from outside git)."""
    node = getattr(built, "__commit__", None) or ""
    return (node[1:], getattr(built, "__dirty__", None)) if node.startswith("g") and len(node) > 8 else (None, None)


def handle_by_uuid(uuid: object) -> tuple[Any, list[str]]:
    """(NVML handle, []) for torch's UUID of a GPU or MIG slice (with or without its prefix), or
    (None, [why for each form tried]). NVML must be initialised."""
    raw = str(uuid)
    errors = []
    for candidate in [raw] if raw.startswith(("GPU-", "MIG-")) else [f"GPU-{raw}", f"MIG-{raw}"]:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(candidate), []
        except pynvml.NVMLError as e:
            errors.append(f"{candidate}: {e}")
    return None, errors


def _gpu(torch: ModuleType | None, device_index: int) -> dict[str, Any] | None:
    """Name, driver, uuid and memory of torch's GPU `device_index`, from NVML (asked by UUID:
    CUDA_VISIBLE_DEVICES renumbers indices), else from torch, else None."""
    uuid = None
    if torch is not None and torch.cuda.is_available():
        uuid = torch.cuda.get_device_properties(device_index).uuid
    try:
        pynvml.nvmlInit()
        try:
            handle = handle_by_uuid(uuid)[0] if uuid else pynvml.nvmlDeviceGetHandleByIndex(device_index)
            return {"name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
                    "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                    "memory_total_mib": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20)}
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library or no GPU: fall back to torch
        pass
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device_index)
        return {"name": props.name, "driver": None, "uuid": str(getattr(props, "uuid", "")) or None,
                "memory_total_mib": int(props.total_memory // 2**20)}
    return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _environments_folder(folder: str | Path | None = None) -> Path:
    return Path(folder) if folder else (PACKAGE_DATA / "environments").resolve()


def _names(path: Path, python_version: str, torch_version: str) -> bool:
    """Whether an environment file names this torch and Python (minor) version."""
    torch_base = torch_version.split("+")[0]
    py_minor = ".".join(python_version.split(".")[:2])
    torch_re = re.compile(rf"\btorch\s*(==|=|:|\s)\s*{re.escape(torch_base)}(?![\d.])", re.I)
    python_re = re.compile(rf"\bpython\s*(==|=|:|\s)\s*{re.escape(py_minor)}(?!\d)", re.I)
    text = path.read_text(errors="replace")
    return bool(torch_re.search(text) and python_re.search(text))


def matching_environment_file(python_version: str, torch_version: str | None,
                              folder: str | Path | None = None) -> str | None:
    """The first environments/*.txt|*.yml|*.yaml naming this torch and Python version, else None."""
    folder = _environments_folder(folder)
    if not torch_version or not folder.is_dir():
        return None
    for path in sorted(p for ext in ("*.txt", "*.yml", "*.yaml") for p in folder.glob(ext)):
        if _names(path, python_version, torch_version):
            return f"environments/{path.name}"
    return None


def environment_file(named: str, folder: str | Path | None = None) -> Path | None:
    """The file a record's `matches_environment_file` names ("environments/x.txt"), if this harness has it."""
    name = Path(str(named)).name
    path = _environments_folder(folder) / name
    return path if name and path.is_file() else None


def names_versions(path: str | Path, python_version: str | None, torch_version: str | None) -> bool:
    """Whether the environment file at `path` names this torch and Python version (what "matches" means)."""
    return bool(torch_version and python_version and _names(Path(path), python_version, torch_version))


# "torch==2.2.1" (pip) or "- pytorch=1.9.0" (conda), comments aside; the record's names for them
_PIN = re.compile(r"^\s*-?\s*([A-Za-z][A-Za-z0-9_.-]*)\s*==?\s*([0-9][^\s#;,]*)")
_RECORD_NAMES = {"pytorch": "torch", "pillow": "pillow", "scikit_learn": "scikit-learn"}


def environment_pins(path: str | Path) -> dict[str, str]:
    """{name as a record's environment spells it: version} of every pinned package in an environment file."""
    pins = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        match = _PIN.match(line.split("#", 1)[0])
        if match:
            name = match.group(1).lower()
            pins[_RECORD_NAMES.get(name, name)] = match.group(2)
    return pins


def image_libraries() -> dict[str, str | None]:
    """Pillow and its JPEG decoder: resize and decode differ by +-1/255 on some JPEGs between versions."""
    try:
        pass
    except ImportError:
        return {"pillow": None, "libjpeg_turbo": None, "libjpeg": None}

    def version(get: Callable[[str], str | None], name: str) -> str | None:
        try:
            return get(name)
        except Exception:  # an old Pillow without version reporting
            return None

    return {"pillow": PIL.__version__, "libjpeg_turbo": version(features.version_feature, "libjpeg_turbo"),
            "libjpeg": version(features.version_codec, "jpg")}


def code_version() -> dict[str, Any]:
    """{harness, git_commit, git_dirty}: the harness's version and the commit of its checkout (HARNESS_GIT_COMMIT
    names that of a copy without .git; an installed wheel, the commit it was built from)."""
    commit = _git("rev-parse", "HEAD")
    status: str | bool | None = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    if commit is None:  # a copy without .git (a GPU machine): the commit it was copied from, if given
        commit = variables.git_commit()
    if commit is None:  # an installed wheel: the commit setuptools-scm wrote into it when it was built
        commit, status = built_from()
    return {"harness": __version__, "git_commit": commit, "git_dirty": None if status is None else bool(status)}


def environment(device_index: int = 0) -> dict[str, Any]:
    """Library versions, hardware and code version of this process, for a record."""
    try:
        import torch  # lazy: reports read records without torch (and a machine may lack it)
    except ImportError:
        torch = None  # type: ignore[assignment]
    code = code_version()
    python = platform.python_version()
    torch_version = torch.__version__ if torch is not None else None
    cudnn = None
    if torch is not None and torch.backends.cudnn.is_available():
        cudnn = torch.backends.cudnn.version()
    return {
        "python": python,
        "torch": torch_version,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "numpy": np.__version__,
        **image_libraries(),
        "cuda": torch.version.cuda if torch is not None else None,
        "cudnn": cudnn,
        "gpu": _gpu(torch, device_index),
        "cpu": cpu_name(),
        "platform": platform.platform(),
        **code,
        "matches_environment_file": matching_environment_file(python, torch_version),
    }
