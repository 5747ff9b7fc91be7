"""Loaders for checkpoints of well-known architectures, named `FAMILY:SOURCE[,key=value,...]` wherever a model
or segmenter spec is accepted (`--model progan:churchoutdoor_lsun.pth`, `--segmenter ade20k:DIR+color`).

SOURCE is a path (a file, or a folder holding one of the family's known files), or the short name of a known
checkpoint, looked for in the cache folder (`$GANDISSECT_CACHE`, else ~/.cache/gandissect). Loading never
downloads: a missing file is reported with where it was looked for and where it is published, and
`gandissect download family:name` fetches it into the cache only when the user asks (over https when the host
serves it; each file's sha256 is printed and recorded in the cache's downloads.json, and a cached file that no
longer matches its record is reported whenever it is loaded). Options after
the source (`,truncation=0.7`) are checked against the loader's declared options. Each family's loader lives
beside its model, in `gandissect.models.<family>.loader`, as a module-level `LOADER`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gandissect.core.errors import ConfigError
from gandissect.models.files import RECORD, cache_dir, first_line, record_download, warn_if_changed
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
    digest = sha256_file(path)
    warn_if_changed(path, digest)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest}


WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}


def is_cached(loader: Loader, entry: KnownCheckpoint) -> bool:
    """Whether a known checkpoint is on this machine (False too when the cache folder is unusable)."""
    try:
        return loader.is_cached(entry) if loader.is_cached else (cache_dir() / entry.filename).exists()
    except ConfigError:
        return False


def switch_option(options: Mapping[str, str], key: str, family: str) -> bool | None:
    """A yes/no option (yes, true, 1, no, false, 0), None when not given; refused in one line otherwise."""
    if key not in options:
        return None
    value = SWITCHES.get(options[key].lower())
    if value is None:
        raise ConfigError(f"{family} option {key}={options[key]!r}: choose yes or no")
    return value


SWITCHES = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


def describe_loader(loader: Loader) -> dict[str, Any]:
    """A JSON-ready summary of `loader` for `gandissect models`."""
    return {
        "family": loader.family,
        "part": loader.part,
        "description": loader.description,
        "expects": loader.expects,
        "options": dict(loader.options),
        "known": [{"name": k.name, "filename": k.filename, "url": k.url, "sha256": k.sha256, "note": k.note,
                   "cached": is_cached(loader, k)} for k in loader.known],
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


def https_first(url: str) -> list[str]:
    """The addresses to try for `url`, https first: a host that serves both gives the file over https."""
    return [f"https://{url[len('http://'):]}", url] if url.startswith("http://") else [url]


def open_url(url: str, timeout: float) -> Any:
    """The response to a GET of `url` (the one function that reaches the network; tests replace it)."""
    import urllib.request

    return urllib.request.urlopen(url, timeout=timeout)


def _open_preferring_https(url: str, timeout: float, advice: str) -> tuple[str, Any]:
    """(the address that answered, its response): https when the host serves it, else the address as published,
    with a warning that the file comes unencrypted; one line with `advice` when neither answers."""
    import urllib.error

    tried = https_first(url)
    for address in tried:
        try:
            response = open_url(address, timeout)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            if address != tried[-1]:
                print(f"gandissect: warning: {address} failed ({first_line(getattr(error, 'reason', error))});"
                      f" downloading over plain http from {tried[-1]}: compare the sha256 printed at the end with "
                      "a trusted source", file=sys.stderr)
                continue
            raise ConfigError(f"cannot download {address}: {first_line(getattr(error, 'reason', error))}; "
                              f"{advice}") from None
        return address, response
    raise AssertionError("unreachable")


def download(spec: str, timeout: float = 60.0, progress: bool = True) -> Path:
    """Fetch the known checkpoint `family:name` into the cache folder (only when a user asks for it), over https
    when the host serves it: streamed to a temporary file (opened before connecting, so that an unwritable
    cache is reported first), its sha256 checked when the loader publishes one, renamed into place and
    recorded in the cache's downloads.json. A file already cached is kept, with a warning if it changed."""
    import http.client

    from tqdm import tqdm

    loader, name, _ = parse_spec(spec)
    entry = known_checkpoint(loader, name)
    if not entry.url:
        raise ConfigError(f"{loader.family} checkpoint {entry.name!r} has no direct download address"
                          + (f": {entry.note}" if entry.note else ""))
    folder = cache_dir()
    target = folder / entry.filename
    if target.exists():
        warn_if_changed(target, sha256_file(target))
        return target
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    by_hand = f"put {entry.filename} in {folder} by hand instead"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial.touch()
    except OSError as error:
        raise ConfigError(f"cannot write to the cache folder {folder} ({error.strerror}): set GANDISSECT_CACHE to a "
                          f"folder you can write, or put {entry.filename} there by hand") from None
    try:
        address, response = _open_preferring_https(entry.url, timeout, by_hand)
        total = int(response.headers.get("Content-Length") or 0) or None
        with response, open(partial, "wb") as stream, tqdm(total=total, unit="B", unit_scale=True,
                                                           desc=entry.filename, disable=not progress) as bar:
            while block := response.read(1 << 20):
                stream.write(block)
                bar.update(len(block))
        actual = sha256_file(partial)
        if entry.sha256 and not actual.startswith(entry.sha256.lower()):
            raise ConfigError(f"{address} gave a file with sha256 {actual[:16]}…, not the published "
                              f"{entry.sha256[:16]}…: it was not kept")
        os.replace(partial, target)
    except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
        raise ConfigError(f"cannot download {entry.url}: {first_line(error)}; {by_hand}") from None
    except OSError as error:
        raise ConfigError(f"cannot write {error.filename or partial} ({error.strerror}): nothing was kept; free "
                          "the problem and run the download again") from None
    finally:
        partial.unlink(missing_ok=True)
    try:
        record_download(target, address, actual)
    except OSError as error:
        print(f"gandissect: warning: {target} is downloaded (sha256 {actual}) but could not be recorded in "
              f"{folder / RECORD} ({error.strerror})", file=sys.stderr)
    return target
