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


DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors file of `tensors`, the same bytes for the same tensors and metadata (the library's
    own writer orders its header differently from run to run): a header with sorted keys, padded to 8 bytes,
    then the tensors' bytes in name order."""
    header: dict[str, Any] = {"__metadata__": dict(sorted((metadata or {}).items()))} if metadata else {}
    chunks, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def save_safetensors_atomic(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    write_bytes_atomic(path, safetensors_bytes(tensors, metadata))


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
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise StoredFileError(f"{path} does not exist") from None
    except OSError as error:
        raise StoredFileError(f"cannot read statistics file {path}: {error.strerror}") from None
    return statistics_from_bytes(data, str(path), device)


def statistics_from_bytes(data: bytes, where: str, device: torch.device | str = "cpu"
                          ) -> tuple[dict[str, Statistic], dict]:
    """The statistics and meta dictionary in the bytes of a statistics file (`where` names it in errors):
    every statistic the header lists must be there whole, with every tensor its class keeps."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        size = int.from_bytes(data[:8], "little")
        if len(data) < 8 or size > len(data) - 8:
            raise ValueError("its header is cut off")
        header = json.loads(data[8:8 + size]).get("__metadata__") or {}
        tensors = load(data)
        classes = json.loads(header.get("classes", "{}"))
        meta = json.loads(header.get("meta", "{}"))
        if not isinstance(classes, dict) or not isinstance(meta, dict):
            raise ValueError("its header is not the one gandissect writes")
    except (SafetensorError, ValueError, AttributeError, UnicodeDecodeError) as error:
        raise StoredFileError(f"cannot read statistics file {where}: {error}") from None
    stats = {}
    for name, class_name in classes.items():
        prefix = f"{name}/"
        state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        try:
            kind = statistic_class(class_name)
        except KeyError:
            raise StoredFileError(f"{where}: statistic {name} has unknown class {class_name!r}") from None
        missing = [field for field in kind.fields if field not in state]
        if missing:
            raise StoredFileError(f"{where} lacks tensor {prefix}{missing[0]}: the file is damaged")
        stats[name] = kind.from_state_dict(state).to(device)
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
