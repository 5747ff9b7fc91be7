"""Checkpoint files as data: reading them safely, telling a user in one line why one cannot be read (or which
loader it belongs to), and the cache folder with its record of what `gandissect download` fetched.

A .pth/.pt file is read with torch.load(weights_only=True): a file that pickles anything but tensors and
plain containers is refused, never unpickled, since unpickling runs code from the file. The cache folder keeps
`downloads.json`: each downloaded file's sha256, size and address, so that a cached file that changed since
its download is reported whenever it is loaded.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from gandissect.core.errors import ConfigError

RECORD = "downloads.json"
"""The cache folder's record of downloaded files: {"files": {name: {"sha256", "bytes", "url", "downloaded"}}}."""
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL = 0x80
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FAMILY_KEYS = {
    "progan": re.compile(r"(layer\d+|features\.\d+|output(_\d+x\d+)?)\.(conv\.weight|wscale\.(b|scale))"),
    "stylegan2": re.compile(r"g_ema|latent_avg|style\.\d+\.(weight|bias)|input\.input|noises\.noise_\d+|"
                            r"(conv1|convs\.\d+|to_rgb1|to_rgbs\.\d+)\..+"),
}
"""Key patterns by which a checkpoint of each loader family is recognised (to name the loader to use)."""


def cache_dir() -> Path:
    """Where known checkpoints are looked for by name: $GANDISSECT_CACHE, else ~/.cache/gandissect; refused in
    one line when that path is a file or lies under one."""
    given = os.environ.get("GANDISSECT_CACHE")
    path = Path(given).expanduser() if given else Path.home() / ".cache" / "gandissect"
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                where = "is a file" if place == path else f"lies under the file {place}"
                named = "GANDISSECT_CACHE" if given else "the default cache folder"
                raise ConfigError(f"{named} {path} {where}, not a folder: set GANDISSECT_CACHE to a folder")
            break
    return path


def family_hint(keys: Iterable[Any], family: str) -> str:
    """'; it looks like a X checkpoint: load it with X:FILE' when the keys are another loader family's."""
    keys = [key for key in keys if isinstance(key, str)]
    for other, pattern in FAMILY_KEYS.items():
        matched = sum(1 for key in keys if pattern.fullmatch(key))
        if other != family and matched and (matched * 2 >= len(keys) or (other == "stylegan2" and "g_ema" in keys)):
            return f"; it looks like a {other} checkpoint: load it with {other}:FILE"
    return ""


def first_line(error: BaseException) -> str:
    """An exception's message as one line without terminal colour codes."""
    text = ANSI.sub("", str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_state_file(path: str | Path, what: str, allowed: tuple[type, ...] = ()) -> Any:
    """A checkpoint file of `what` (e.g. "ProGAN") as safetensors or torch.load(weights_only=True) reads it;
    `allowed` are the extra classes its pickle may hold (such as argparse.Namespace). Every way it can fail is
    one line of ours: missing, empty, not a checkpoint at all, blocked objects, damaged."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no {what} checkpoint at {path}")
    with open(path, "rb") as stream:
        head = stream.read(16)
    if not head:
        raise ConfigError(f"{path} is empty, not a {what} checkpoint")
    if path.suffix == ".safetensors" or (len(head) > 8 and head[8:9] == b"{"):  # safetensors: size, then JSON
        return _read_safetensors(path)
    if not head.startswith(ZIP_MAGIC) and head[0] != PICKLE_PROTOCOL:
        raise ConfigError(f"{path} is not a PyTorch checkpoint: torch.save writes a zip archive or a pickle, and this "
                          f"file starts with {head!r}")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(error))
        if blocked is None:
            raise ConfigError(f"{path} is a damaged PyTorch checkpoint ({first_line(error)})") from None
        raise ConfigError(f"{path} holds a pickled {blocked.group(1)}, not only tensors: gandissect never unpickles "
                          "objects from a checkpoint, since that runs code from the file; save the weights alone "
                          "(torch.save(model.state_dict(), FILE), or safetensors) and pass that file") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise ConfigError(f"{path} is a damaged or truncated PyTorch checkpoint ({type(error).__name__}: "
                          f"{first_line(error)})") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ConfigError(f"{path} is not a readable safetensors file ({first_line(error)}): it is damaged, "
                          "truncated or in another format") from None


# --- the record of downloads -----------------------------------------------------------------------------------


def read_record(folder: Path) -> dict[str, dict[str, Any]]:
    """The download record of cache `folder` by file name ({} when there is none or it cannot be read)."""
    try:
        document = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    files = document.get("files") if isinstance(document, dict) else None
    return {name: entry for name, entry in files.items() if isinstance(entry, dict)} if isinstance(files, dict) else {}


def record_download(path: Path, url: str, sha256: str) -> None:
    """Add `path` (in the cache folder) to its folder's download record, written atomically."""
    files = read_record(path.parent)
    files[path.name] = {"sha256": sha256, "bytes": path.stat().st_size, "url": url,
                        "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{RECORD}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump({"files": files}, stream, indent=1, sort_keys=True)
        os.replace(temporary, path.parent / RECORD)
    finally:
        Path(temporary).unlink(missing_ok=True)


def changed_since_download(path: Path, sha256: str) -> str | None:
    """A one-line warning when `path` was downloaded into the cache with another sha256 than it has now."""
    try:
        in_cache = path.resolve().parent == cache_dir().resolve()
    except ConfigError:
        return None
    entry = read_record(path.parent).get(path.name) if in_cache else None
    if not entry or entry.get("sha256") in (None, sha256):
        return None
    return (f"warning: {path} has sha256 {sha256[:16]}…, not the {str(entry['sha256'])[:16]}… recorded when it was "
            f"downloaded from {entry.get('url', '?')} on {entry.get('downloaded', '?')}: the file changed since; "
            f"delete it and download it again")


def warn_if_changed(path: Path, sha256: str) -> None:
    """Print `changed_since_download`'s warning to stderr when there is one."""
    warning = changed_since_download(path, sha256)
    if warning:
        print(f"gandissect: {warning}", file=sys.stderr)
