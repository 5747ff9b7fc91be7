"""Atomic file writes: a finished result is either fully on disk or not there at all."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from gandissect.core.errors import GandissectError
from gandissect.core.images import png_bytes
from gandissect.core.stats import Statistic, statistic_class


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def save_torch_atomic(path: str | Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def save_safetensors_atomic(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    contiguous = {k: tensors[k].detach().cpu().contiguous() for k in sorted(tensors)}
    write_bytes_atomic(path, safetensors_bytes(contiguous, metadata=metadata))


def save_png(path: str | Path, picture: np.ndarray, scale: int = 1) -> None:
    """Write a (H, W, 3) uint8 picture as a PNG file, atomically."""
    write_bytes_atomic(path, png_bytes(picture, scale))


def save_statistics(path: str | Path, stats: dict[str, Statistic], meta: dict | None = None) -> None:
    """Atomically save named statistics (and JSON-able `meta`) to one safetensors file."""
    tensors = {}
    for name, stat in stats.items():
        for field, tensor in stat.state_dict().items():
            tensors[f"{name}/{field}"] = tensor
    header = {"classes": json.dumps({name: type(stat).__name__ for name, stat in stats.items()}, sort_keys=True),
              "meta": json.dumps(meta or {}, sort_keys=True)}
    save_safetensors_atomic(path, tensors, header)


def load_statistics(path: str | Path, device: torch.device | str = "cpu") -> tuple[dict[str, Statistic], dict]:
    """Inverse of `save_statistics`: the named statistics and the meta dictionary."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
        classes = json.loads(header.get("classes", "{}"))
        meta = json.loads(header.get("meta", "{}"))
    except FileNotFoundError:
        raise StoredFileError(f"{path} does not exist") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise StoredFileError(f"cannot read statistics file {path}: {error}") from None
    stats = {}
    for name, class_name in classes.items():
        prefix = f"{name}/"
        state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        stats[name] = statistic_class(class_name).from_state_dict(state).to(device)
    return stats, meta


class StoredFileError(GandissectError):
    """A stored file that cannot be read or parsed; the message names it."""


def read_json(path: str | Path) -> Any:
    """Parse a JSON file, naming the file in any error."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoredFileError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StoredFileError(f"cannot read {path}: {error}") from None


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The meta dictionary of a statistics file, without loading its tensors ({} if unreadable)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads((handle.metadata() or {}).get("meta", "{}"))
    except (SafetensorError, OSError, ValueError):
        return {}


MAX_PICTURE_PIXELS = 4096 * 4096


def read_picture(path: str | Path, mode: str, what: str) -> np.ndarray:
    """A picture file handed to a command (`what` names the flag), as an array in PIL `mode` ("L", "RGB"):
    its size is read from the header and anything over MAX_PICTURE_PIXELS is refused before decoding (no
    decompression bomb); a file that is not a picture gets one line."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            width, height = picture.size
            if width * height > MAX_PICTURE_PIXELS:
                raise GandissectError(f"{what} {path} is {width}x{height}: over {MAX_PICTURE_PIXELS:,} pixels, "
                                      "too large for a picture this command reads")
            return np.asarray(picture.convert(mode))
    except Image.DecompressionBombError:
        raise GandissectError(f"{what} {path} declares far more pixels than a picture this command reads: too "
                              "large") from None
    except (OSError, ValueError) as error:
        raise GandissectError(f"{what} {path}: not a picture that can be read ({error})") from None
