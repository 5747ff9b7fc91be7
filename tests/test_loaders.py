"""Loader specs (`family:source,key=value`): parsing, finding files without downloading, the ProGAN loader
through the CLI, and what `gandissect models` tells a user about each loader."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gandissect.core.errors import ConfigError
from gandissect.models import default_layers_for, loaders, resolve_generator, resolve_segmenter
from gandissect.models.progan import ProGANGenerator, load_progan


def small_progan() -> ProGANGenerator:
    """A random 16x16 ProGAN whose images stay near [-1, 1] (to-RGB scaled down, as in test_progan)."""
    torch.manual_seed(0)
    state = dict(ProGANGenerator(16).state_dict())
    state["output_16x16.conv.weight"] = state["output_16x16.conv.weight"] * 0.2
    return load_progan(state)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("progan") / "churchoutdoor_lsun.pth"
    torch.save(small_progan().state_dict(), path)
    return path


def test_spec_parsing_checks_options():
    loader, source, options = loaders.parse_spec("progan:a/b.pth,resolution=256,pixel_norm=after")
    assert (loader.family, source, options) == ("progan", "a/b.pth", {"resolution": "256", "pixel_norm": "after"})
    with pytest.raises(ConfigError, match=r"no option 'truncation'.*resolution"):
        loaders.parse_spec("progan:a.pth,truncation=0.5")
    with pytest.raises(ConfigError, match="not key=value"):
        loaders.parse_spec("progan:a.pth,256")
    with pytest.raises(ConfigError, match=r"names no checkpoint.*churchoutdoor"):
        loaders.parse_spec("progan:")
    assert loaders.is_loader_spec("progan:x") and not loaders.is_loader_spec("tests/x.py:make")


def test_loaded_generator_equals_the_state_dicts_and_picks_layer4(checkpoint):
    generator = resolve_generator(f"progan:{checkpoint}")
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(generator(z), small_progan()(z))
    assert default_layers_for(f"progan:{checkpoint}", generator) == ["layer4"]
    assert generator.checkpoint["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()


def test_folder_and_cache_lookup_without_download(checkpoint, tmp_path, monkeypatch, no_network):
    assert loaders.find_checkpoint(loaders.get_loader("progan"), str(checkpoint.parent)) == checkpoint
    monkeypatch.setenv("GANDISSECT_CACHE", str(checkpoint.parent))
    assert loaders.find_checkpoint(loaders.get_loader("progan"), "churchoutdoor") == checkpoint
    monkeypatch.setenv("GANDISSECT_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match=r"not in the cache.*kitchen_lsun\.pth.*netdissect.*Nothing is downloaded"):
        resolve_generator("progan:kitchen")
    with pytest.raises(ConfigError, match="holding none of the progan files"):
        resolve_generator(f"progan:{tmp_path}")
    with pytest.raises(ConfigError, match=r"no progan checkpoint at nowhere\.pth"):
        resolve_generator("progan:nowhere.pth")


def test_a_generator_loader_is_not_a_segmenter(checkpoint):
    with pytest.raises(ConfigError, match="loads a generator, not a segmenter"):
        resolve_segmenter(f"progan:{checkpoint}+color")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gandissect.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_dissects_a_progan_file_and_records_its_checksum(checkpoint, tmp_path):
    out = tmp_path / "run"
    done = run_cli("dissect", "--model", f"progan:{checkpoint},resolution=16", "--segmenter", "color",
                   "--samples", "8", "--batch-size", "4", "--no-report", "--out", str(out))
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "dissect.json").read_text())
    assert list(document["layers"]) == ["layer4"]
    assert document["layers"]["layer4"]["shape"][0] == 512
    assert document["model_checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert document["model_checkpoint"]["sha256"] in done.stderr
    wrong = run_cli("layers", "--model", f"progan:{checkpoint},resolution=256")
    assert wrong.returncode == 2 and "holds a 16x16 ProGAN, not the 256x256" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_models_lists_every_loader_with_its_file_and_command():
    done = run_cli("models", "--json")
    assert done.returncode == 0, done.stderr
    listed = {entry["family"]: entry for entry in json.loads(done.stdout)["loaders"]}
    assert set(listed) == set(loaders.LOADER_MODULES)
    for family, entry in listed.items():
        assert entry["example"].startswith("gandissect dissect") and f"{family}:" in entry["example"]
        assert entry["expects"] and entry["part"] in ("generator", "segmenter")
    church = {k["name"]: k for k in listed["progan"]["known"]}["churchoutdoor"]
    assert church["filename"] == "churchoutdoor_lsun.pth" and church["url"].endswith("/churchoutdoor_lsun.pth")
    text = run_cli("models").stdout
    assert "progan:FILE" in text and listed["progan"]["example"] in text


@pytest.fixture
def served(tmp_path: Path):
    """A local HTTP server over a folder holding one file; yields (folder, base URL)."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def with_known(monkeypatch: pytest.MonkeyPatch, url: str, sha256: str | None) -> None:
    """Make progan's 'kitchen' checkpoint published at `url` with checksum `sha256`."""
    import dataclasses

    original = loaders.get_loader("progan")
    entry = loaders.KnownCheckpoint("kitchen", "kitchen_lsun.pth", url, sha256)
    patched = dataclasses.replace(original, known=(entry,))
    monkeypatch.setattr(loaders, "get_loader", lambda family: patched if family == "progan" else original)


def test_download_only_when_asked_checks_the_checksum_and_then_loads(checkpoint, served, tmp_path, monkeypatch):
    folder, base = served
    (folder / "kitchen_lsun.pth").write_bytes(checkpoint.read_bytes())
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    monkeypatch.setenv("GANDISSECT_CACHE", str(cache))
    with_known(monkeypatch, f"{base}/kitchen_lsun.pth", "0" * 64)
    with pytest.raises(ConfigError, match="not the published"):
        loaders.download("progan:kitchen", progress=False)
    assert not cache.exists() or not any(cache.iterdir())  # neither the file nor a partial one is left
    with pytest.raises(ConfigError, match=r"not in the cache.*gandissect download progan:kitchen"):
        resolve_generator("progan:kitchen")
    with_known(monkeypatch, f"{base}/kitchen_lsun.pth", digest[:16])
    path = loaders.download("progan:kitchen", progress=False)
    assert path == cache / "kitchen_lsun.pth" and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(resolve_generator("progan:kitchen")(z), small_progan()(z))
    with_known(monkeypatch, f"{base}/missing.pth", None)
    (cache / "kitchen_lsun.pth").unlink()
    with pytest.raises(ConfigError, match=r"cannot download .*missing\.pth.*by hand"):
        loaders.download("progan:kitchen", progress=False)
    with pytest.raises(ConfigError, match="knows no checkpoint 'attic'"):
        loaders.download("progan:attic", progress=False)


def test_sample_grid_of_a_loaded_checkpoint(checkpoint, tmp_path):
    from PIL import Image

    done = run_cli("sample", "--model", f"progan:{checkpoint}", "--segmenter", "color", "--count", "6",
                   "--batch-size", "4", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    samples = Image.open(tmp_path / "samples.png")
    assert samples.size == (2 * (6 * 17 + 1), 2 * 18)  # 6 columns of 16x16 images, 1-pixel gaps, scale 2
    assert (tmp_path / "segmentation.png").exists() and "values in [" in done.stdout
    unknown = run_cli("sample", "--model", "nowhere", "--out", str(tmp_path))
    assert unknown.returncode == 2 and "progan:FILE" in unknown.stderr
