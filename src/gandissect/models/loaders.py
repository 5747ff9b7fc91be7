"""Loaders for checkpoints of well-known architectures, named `FAMILY:SOURCE[,key=value,...]` wherever a model
or segmenter spec is accepted (`--model progan:churchoutdoor_lsun.pth`, `--segmenter ade20k:DIR+color`).

SOURCE is a path (a file, or a folder holding one of the family's known files), or the short name of a known
checkpoint, looked for in the cache folder (`$GANDISSECT_CACHE`, else ~/.cache/gandissect). Loading never
downloads: a missing file is reported with where it was looked for and where it is published, and
`gandissect download family:name` fetches it into the cache only when the user asks. Options after
the source (`,truncation=0.7`) are checked against the loader's declared options. Each family's loader lives
beside its model, in `gandissect.models.<family>.loader`, as a module-level `LOADER`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gandissect.core.errors import ConfigError
from gandissect.models.registry import sha256_file

LOADER_MODULES = {
    "progan": "gandissect.models.progan.loader",
    "stylegan2": "gandissect.models.stylegan2.loader",
    "ade20k": "gandissect.models.ade20k.loader",
}
"""Family name -> module defining `LOADER`; imported only when that family is named or listed."""
EXTRA_MODULES = {"ade20k": "transformers"}
"""Optional extra (pip install 'gandissect[extra]') -> the module it installs."""

LoadFunction = Callable[[str, Mapping[str, str], "str | torch.device"], Any]
"""(source as given, options, device) -> the loaded generator or segmenter."""


class MissingExtraError(ConfigError):
    """A loader needs an optional dependency that is not installed; says the command that installs it."""


@dataclass(frozen=True)
class KnownCheckpoint:
    """A published checkpoint a loader knows by a short name: the file to download and where it is published."""

    name: str
    filename: str
    url: str | None = None
    sha256: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Loader:
    """How to load one architecture family's real checkpoints, and what to tell a user about them."""

    family: str
    part: str
    description: str
    expects: str
    load: LoadFunction
    options: Mapping[str, str] = field(default_factory=dict)
    known: tuple[KnownCheckpoint, ...] = ()
    example: str = ""
    extra: str | None = None
    tested: str = "random weights in the published key layout; never with the real files (none can be downloaded here)"
    is_cached: Callable[[KnownCheckpoint], bool] | None = None
    """Whether a known checkpoint is on this machine (default: its file is in the cache folder)."""


def families() -> list[str]:
    """Every loader family name."""
    return sorted(LOADER_MODULES)


def get_loader(family: str) -> Loader:
    """The loader of `family`; a one-line error naming the known families otherwise."""
    if family not in LOADER_MODULES:
        raise ConfigError(f"no loader named {family!r}; loaders: {', '.join(families())}")
    return importlib.import_module(LOADER_MODULES[family]).LOADER


def is_loader_spec(spec: str) -> bool:
    """Whether `spec` names a loader (`family:source...`)."""
    family, colon, _ = spec.partition(":")
    return bool(colon) and family in LOADER_MODULES


def parse_spec(spec: str) -> tuple[Loader, str, dict[str, str]]:
    """Split `family:source[,key=value...]` into the loader, the source and the checked options."""
    family, _, rest = spec.partition(":")
    loader = get_loader(family)
    source, *pairs = rest.split(",")
    if not source:
        raise ConfigError(f"{spec!r} names no checkpoint: write {family}:PATH (a file, a folder, or one of "
                          f"{', '.join(k.name for k in loader.known) or 'the files it expects'})")
    options: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise ConfigError(f"{spec!r}: option {pair!r} is not key=value")
        if key not in loader.options:
            allowed = ", ".join(f"{k} ({v})" for k, v in loader.options.items()) or "none"
            raise ConfigError(f"{spec!r}: the {family} loader has no option {key!r}; its options: {allowed}")
        options[key] = value
    return loader, source, options


def load_spec(spec: str, device: str | torch.device = "cpu") -> Any:
    """The generator or segmenter that the loader spec names."""
    loader, source, options = parse_spec(spec)
    return loader.load(source, options, device)


def cache_dir() -> Path:
    """Where known checkpoints are looked for by name: $GANDISSECT_CACHE, else ~/.cache/gandissect."""
    return Path(os.environ.get("GANDISSECT_CACHE") or Path.home() / ".cache" / "gandissect")


def find_checkpoint(loader: Loader, source: str, folders_are_checkpoints: bool = False) -> Path:
    """The checkpoint `source` names: an existing path; a folder holding exactly one known file; or a known
    name (or file name) in the cache folder. With `folders_are_checkpoints`, a folder is itself the checkpoint
    (a Hugging Face model folder). Refused in one line saying where it looked and where the file is published."""
    path = Path(source).expanduser()
    if path.is_file() or (folders_are_checkpoints and path.is_dir()):
        return path
    if path.is_dir():
        inside = [path / k.filename for k in loader.known if (path / k.filename).exists()]
        if len(inside) == 1:
            return inside[0]
        names = ", ".join(k.filename for k in loader.known)
        raise ConfigError(f"{path} is a folder holding {'none' if not inside else 'several'} of the {loader.family} "
                          f"files ({names}): name the file itself")
    known = {k.name: k for k in loader.known} | {k.filename: k for k in loader.known}
    if source in known:
        entry = known[source]
        cached = cache_dir() / entry.filename
        if cached.exists():
            return cached
        where = f"; it is published at {entry.url}" if entry.url else ""
        fetch = f" or run `gandissect download {loader.family}:{entry.name}`" if entry.url else ""
        raise ConfigError(f"{loader.family} checkpoint {source!r} is not in the cache: put {entry.filename} in "
                          f"{cache_dir()} (or set GANDISSECT_CACHE){fetch}{where}. Nothing is downloaded "
                          "automatically.")
    names = ", ".join(k.name for k in loader.known)
    raise ConfigError(f"no {loader.family} checkpoint at {path}" + (f"; known names: {names}" if names else ""))


def extra_installed(extra: str) -> bool:
    """Whether the optional extra's module can be imported (checked without importing it)."""
    return importlib.util.find_spec(EXTRA_MODULES.get(extra, extra)) is not None


def require_extra(module: str, extra: str) -> Any:
    """Import an optional dependency, or refuse in one line with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(f"this needs the optional package {module!r} ({error}): install it with "
                                f"pip install 'gandissect[{extra}]'") from None


def checkpoint_record(path: Path) -> dict[str, Any]:
    """What identifies a checkpoint file for the user: its path, size and sha256 (shown, and kept in runs)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {"path": str(path), "bytes": sum(p.stat().st_size for p in files),
                "sha256": {str(p.relative_to(path)): sha256_file(p) for p in files if p.suffix in WEIGHT_SUFFIXES}}
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}


def describe_loader(loader: Loader) -> dict[str, Any]:
    """A JSON-ready summary of `loader` for `gandissect models`."""
    return {
        "family": loader.family,
        "part": loader.part,
        "description": loader.description,
        "expects": loader.expects,
        "options": dict(loader.options),
        "known": [{"name": k.name, "filename": k.filename, "url": k.url, "sha256": k.sha256, "note": k.note,
                   "cached": loader.is_cached(k) if loader.is_cached else (cache_dir() / k.filename).exists()}
                  for k in loader.known],
        "example": loader.example,
        "extra": loader.extra,
        "tested": loader.tested,
    }


def known_checkpoint(loader: Loader, name: str) -> KnownCheckpoint:
    """The known checkpoint called `name` (short name or file name); a one-line error listing them otherwise."""
    for entry in loader.known:
        if name in (entry.name, entry.filename):
            return entry
    names = ", ".join(k.name for k in loader.known) or "none"
    raise ConfigError(f"the {loader.family} loader knows no checkpoint {name!r}; known: {names}")


def download(spec: str, timeout: float = 60.0, progress: bool = True) -> Path:
    """Fetch the known checkpoint `family:name` into the cache folder (only when a user asks for it): streamed
    to a temporary file, its sha256 checked when the loader records one, then renamed into place."""
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    loader, name, _ = parse_spec(spec)
    entry = known_checkpoint(loader, name)
    if not entry.url:
        raise ConfigError(f"{loader.family} checkpoint {entry.name!r} has no direct download address"
                          + (f": {entry.note}" if entry.note else ""))
    target = cache_dir() / entry.filename
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(entry.url, timeout=timeout) as response, open(partial, "wb") as stream:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=entry.filename, disable=not progress) as bar:
                while block := response.read(1 << 20):
                    stream.write(block)
                    bar.update(len(block))
        actual = sha256_file(partial)
        if entry.sha256 and not actual.startswith(entry.sha256.lower()):
            raise ConfigError(f"{entry.url} gave a file with sha256 {actual[:16]}…, not the published "
                              f"{entry.sha256[:16]}…: it was not kept")
        os.replace(partial, target)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise ConfigError(f"cannot download {entry.url}: {getattr(error, 'reason', error)}; put {entry.filename} "
                          f"in {cache_dir()} by hand instead") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def read_state_file(path: str | Path, what: str, allowed: tuple[type, ...] = ()) -> Any:
    """A checkpoint file of `what` (e.g. "ProGAN") as safetensors or torch.load with weights_only=True reads
    it; `allowed` are the extra classes its pickle may hold (such as argparse.Namespace). One-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no {what} checkpoint at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    extra = f", {', '.join(t.__qualname__ for t in allowed)} allowed" if allowed else ""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refused or a corrupt file: the user's file, not our bug
        raise ConfigError(f"cannot read {path} as a PyTorch checkpoint of tensors (torch.load with "
                          f"weights_only=True{extra}): {error}") from error
