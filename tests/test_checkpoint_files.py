"""Checkpoint files a user hands a loader, and the cache folder: each mistake is one line of ours (no traceback,
no PyTorch advice to unpickle), a file of another family names its loader, downloads prefer https and record
each file's sha256, and a cached file that changed since its download is reported."""

from __future__ import annotations

import argparse
import contextlib
import fractions
import hashlib
import io
import json
import os
import shutil
import subprocess
import urllib.error
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gandissect.cli import main
from gandissect.models import SPEC_FORMS, loaders, resolve_generator
from gandissect.models.files import RECORD, read_record
from gandissect.models.stylegan2 import StyleGAN2Generator, published_checkpoint, to_published
from test_loaders import small_progan, with_known


def error_line(capsys: pytest.CaptureFixture[str], command: str, *words: str) -> str:
    """The one error line `command` printed (the loaders' own progress lines aside), checked for `words`."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith(f"gandissect {command}: error:")]
    assert len(errors) == 1 and "Traceback" not in err and "\x1b" not in err, err
    assert "weights_only=False" not in err and "--resume" not in err, err
    assert all(word in errors[0] for word in words), errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def stylegan2_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny StyleGAN2 as a bare g_ema state dict and as a training checkpoint (args as a Namespace)."""
    folder = tmp_path_factory.mktemp("stylegan2")
    torch.manual_seed(0)
    generator = StyleGAN2Generator(8, style_dim=16, n_mlp=1, channels={4: 8, 8: 8})
    torch.save(to_published(generator), folder / "g_ema.pt")
    torch.save(dict(published_checkpoint(generator), g=to_published(generator), args=argparse.Namespace(size=8)),
               folder / "train.pt")
    return {"bare": folder / "g_ema.pt", "training": folder / "train.pt"}


def test_spec_forms_name_every_loader_and_the_factory_forms(capsys):
    for family in loaders.families():
        assert f"{family}:" in SPEC_FORMS
    for form in ("progan:FILE", "stylegan2:FILE", "ade20k:NAME", "file.py:factory", "module:callable",
                 "shipped model name", "'color'"):
        assert form in SPEC_FORMS, form
    with pytest.raises(SystemExit):
        main(["layers", "--help"])
    assert " ".join(SPEC_FORMS.split()) in " ".join(capsys.readouterr().out.split())


def _damaged_zip(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(small_progan().state_dict(), buffer)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _random_safetensors(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 2)


def _truncated_safetensors(path: Path) -> None:
    save_file({"layer1.conv.weight": torch.zeros(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize(("name", "make", "words"), [
    ("text.pth", lambda p: p.write_text("hello, I am a text file\n"),
     ["text.pth is not a PyTorch checkpoint", "starts with b'hello, I am a te'"]),
    ("empty.pth", lambda p: p.write_bytes(b""), ["empty.pth is empty, not a ProGAN checkpoint"]),
    ("blocked.pth", lambda p: torch.save({"w": fractions.Fraction(1, 3)}, p),
     ["blocked.pth holds a pickled fractions.Fraction", "never unpickles", "state_dict()"]),
    ("half.pth", _damaged_zip, ["half.pth is a damaged or truncated PyTorch checkpoint"]),
    ("random.safetensors", _random_safetensors, ["random.safetensors is not a readable safetensors file"]),
    ("cut.safetensors", _truncated_safetensors, ["cut.safetensors is not a readable safetensors file"]),
])
@pytest.mark.parametrize("family", ["progan", "stylegan2"])
def test_unreadable_blocked_and_corrupt_files_are_one_line(family, name, make, words, tmp_path, capsys):
    path = tmp_path / name
    make(path)
    assert main(["layers", "--model", f"{family}:{path}"]) == 2
    words = [word.replace("ProGAN", "StyleGAN2") if family == "stylegan2" else word for word in words]
    error_line(capsys, "layers", *words)


def test_a_safetensors_file_named_pth_is_read(tmp_path):
    generator = small_progan()
    state = {k: v.contiguous() for k, v in generator.state_dict().items() if k != "clamp_images"}
    save_file(state, str(tmp_path / "weights.pth"))
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(resolve_generator(f"progan:{tmp_path / 'weights.pth'}")(z), generator(z))


@pytest.mark.parametrize("kind", ["bare", "training"])
def test_a_stylegan2_file_given_to_progan_names_the_stylegan2_loader(kind, stylegan2_files, capsys):
    assert main(["layers", "--model", f"progan:{stylegan2_files[kind]}"]) == 2
    error_line(capsys, "layers", "not a ProGAN generator", "load it with stylegan2:FILE")
    assert main(["layers", "--model", f"stylegan2:{stylegan2_files[kind]}"]) == 0  # and that loader reads it


def test_a_progan_file_given_to_stylegan2_names_the_progan_loader(tmp_path, capsys):
    torch.save(small_progan().state_dict(), tmp_path / "church.pth")
    assert main(["layers", "--model", f"stylegan2:{tmp_path / 'church.pth'}"]) == 2
    error_line(capsys, "layers", "not a StyleGAN2 generator", "load it with progan:FILE")


# --- the cache folder ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("under", [False, True])
def test_a_cache_that_names_a_file_is_one_line(under, tmp_path, monkeypatch, capsys, no_network):
    (tmp_path / "file").write_text("not a folder")
    cache = tmp_path / "file" / "sub" if under else tmp_path / "file"
    monkeypatch.setenv("GANDISSECT_CACHE", str(cache))
    phrase = f"lies under the file {tmp_path / 'file'}" if under else "is a file, not a folder"
    assert main(["layers", "--model", "progan:churchoutdoor"]) == 2
    error_line(capsys, "layers", "GANDISSECT_CACHE", phrase)
    assert main(["download", "progan:churchoutdoor"]) == 2
    error_line(capsys, "download", "GANDISSECT_CACHE", phrase)
    assert main(["models"]) == 0  # the listing still works, and says what is wrong with the cache
    out = capsys.readouterr().out
    assert "progan:churchoutdoor" in out and f"unusable: GANDISSECT_CACHE {cache} {phrase}" in out


@contextlib.contextmanager
def read_only(folder: Path):
    """`folder` made unwritable even for root (chattr +i), or by its mode for another user; skipped otherwise."""
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    elif os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
    else:
        pytest.skip("running as root where chattr +i is refused: no folder can be made read-only here")


def test_download_into_a_read_only_cache_is_one_line_before_any_network(tmp_path, monkeypatch, capsys, no_network):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("GANDISSECT_CACHE", str(cache))
    with read_only(cache):
        assert main(["download", "progan:churchoutdoor"]) == 2
    error_line(capsys, "download", f"cannot write to the cache folder {cache}", "set GANDISSECT_CACHE")
    assert not any(cache.iterdir())


# --- downloads: https first, sha256 recorded, changes reported ---------------------------------------------


class Response(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def serve(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes], https: bool) -> list[str]:
    """Replace the network with `files` by address (https ones failing unless `https`); returns the addresses asked."""
    asked: list[str] = []

    def open_url(url: str, timeout: float) -> Response:
        asked.append(url)
        if url.startswith("https://") and not https:
            raise urllib.error.URLError("[SSL: WRONG_VERSION_NUMBER] wrong version number")
        if url not in files:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return Response(files[url])

    monkeypatch.setattr(loaders, "open_url", open_url)
    return asked


@pytest.fixture
def published_file(tmp_path, monkeypatch) -> bytes:
    buffer = io.BytesIO()
    torch.save(small_progan().state_dict(), buffer)
    monkeypatch.setenv("GANDISSECT_CACHE", str(tmp_path / "cache"))
    with_known(monkeypatch, "http://example.org/karras/kitchen_lsun.pth", None)
    return buffer.getvalue()


def test_download_prefers_https_and_records_the_sha256(published_file, tmp_path, monkeypatch, capsys, no_network):
    digest = hashlib.sha256(published_file).hexdigest()
    files = {"https://example.org/karras/kitchen_lsun.pth": published_file,
             "http://example.org/karras/kitchen_lsun.pth": published_file}
    asked = serve(monkeypatch, files, https=True)
    assert main(["download", "progan:kitchen"]) == 0
    assert asked == ["https://example.org/karras/kitchen_lsun.pth"]
    captured = capsys.readouterr()
    assert digest in captured.out and "downloaded from https://example.org/karras/kitchen_lsun.pth" in captured.out
    assert "warning" not in captured.err
    record = read_record(tmp_path / "cache")["kitchen_lsun.pth"]
    assert (record["sha256"], record["bytes"], record["url"]) == (digest, len(published_file), asked[0])
    assert json.loads((tmp_path / "cache" / RECORD).read_text())["files"]["kitchen_lsun.pth"] == record


def test_download_falls_back_to_http_with_a_warning(published_file, tmp_path, monkeypatch, capsys, no_network):
    asked = serve(monkeypatch, {"http://example.org/karras/kitchen_lsun.pth": published_file}, https=False)
    assert main(["download", "progan:kitchen"]) == 0
    assert asked == ["https://example.org/karras/kitchen_lsun.pth", "http://example.org/karras/kitchen_lsun.pth"]
    err = capsys.readouterr().err
    assert "warning: https://example.org/karras/kitchen_lsun.pth failed" in err and "plain http" in err
    assert read_record(tmp_path / "cache")["kitchen_lsun.pth"]["url"] == asked[1]
    serve(monkeypatch, {}, https=False)
    (tmp_path / "cache" / "kitchen_lsun.pth").unlink()
    assert main(["download", "progan:kitchen"]) == 2
    error_line(capsys, "download", "cannot download http://example.org/karras/kitchen_lsun.pth", "by hand")


def test_a_cached_file_that_changed_since_its_download_is_reported(published_file, tmp_path, monkeypatch, capsys,
                                                                   no_network):
    serve(monkeypatch, {"https://example.org/karras/kitchen_lsun.pth": published_file}, https=True)
    assert main(["download", "progan:kitchen"]) == 0
    resolve_generator("progan:kitchen")
    assert "warning" not in capsys.readouterr().err
    cached = tmp_path / "cache" / "kitchen_lsun.pth"
    changed = dict(small_progan().state_dict(), **{"layer1.wscale.b": torch.ones(512)})
    torch.save(changed, cached)
    resolve_generator("progan:kitchen")  # still loads: the user may have replaced it on purpose
    err = capsys.readouterr().err
    assert f"warning: {cached} has sha256 {hashlib.sha256(cached.read_bytes()).hexdigest()[:16]}" in err
    assert f"not the {hashlib.sha256(published_file).hexdigest()[:16]}" in err and "changed since" in err
    assert main(["download", "progan:kitchen"]) == 0  # kept, not fetched again, and reported
    assert "changed since" in capsys.readouterr().err
