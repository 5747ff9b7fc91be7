"""Commands that describe models: their layers, and the registry's models."""

from __future__ import annotations

import argparse

from gandissect.cli.runs import spec_help
from gandissect.models import SPEC_FORMS


def _add_layers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list a generator's layers with their output shapes")
    p.add_argument("--model", required=True, help=f"the generator: {SPEC_FORMS}")
    p.add_argument("--all", action="store_true", help="list every module, nested ones included")
    p.set_defaults(handler=_run_layers)


def _run_layers(args: argparse.Namespace) -> int:
    from gandissect.core.hooks import display_layers, layer_names, layer_shapes
    from gandissect.core.sampling import sample_z
    from gandissect.models import resolve_generator

    generator = resolve_generator(args.model)
    shapes = layer_shapes(generator, sample_z(generator, 0, range(1)))
    modules = dict(generator.named_modules())
    wanted = layer_names(generator) if args.all else display_layers(generator)
    ran = [name for name in shapes if name in wanted]  # in the order they ran; then those that did not
    print(f"{'layer':<32} {'module':<20} output shape")
    for name in ran + [name for name in wanted if name not in shapes]:
        print(f"{name:<32} {type(modules[name]).__name__:<20} {shapes.get(name, '-')}")
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models loadable by name, their defaults and weight files")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(handler=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    import json

    from gandissect.models import registry

    loaders = _loaders()
    own = ("your own generator: gandissect dissect --model path/to/file.py:factory --segmenter color --out runs/mine "
           "(the factory returns a torch.nn.Module with a z_dim; add --layers unless it names layers layer1..layerN)")
    described = [registry.describe(registry.get(name)) for name in registry.names()]
    if args.json:
        print(json.dumps({"models": described, "loaders": loaders, "own_generator": own}, indent=1))
        return 0
    for model in described:
        print(f"{model['name']}: {model['description']}")
        print(f"  image size {model['image_size']}, z shape {tuple(model['z_shape'])}, "
              f"output range {tuple(model['output_range'])}, parts: {', '.join(model['parts'])}")
        print(f"  default layers: {', '.join(model['default_layers']) or 'none'}; "
              f"default segmenter: {model['default_segmenter'] or 'none'}")
        for file in model["weights"]:
            size = "size unknown" if file["bytes"] is None else f"{file['bytes'] / 2 ** 10:,.0f} KiB"
            checksum = f"file sha256 {file['sha256'][:12]}" if file["sha256"] else "no checksum"
            print(f"  {file['part']:<14} {file['path']}  {size}  {checksum}  "
                  f"{'present' if file['present'] else 'MISSING'}")
        if all(file["present"] for file in model["weights"]):
            print(f"  run.json fingerprints (SHA-256 of the loaded weights, see docs/dissect-schema.md): "
                  f"{_fingerprints(model['name'], model['default_segmenter'])}")
        print(f"  dissect: {model['dissect']}")
    if not described:
        print("no models are registered or shipped")
    for loader in loaders:
        _print_loader(loader)
    print(own)
    return 0


def _fingerprints(name: str, segmenter: str | None) -> str:
    """The generator's (and default segmenter's) fingerprint as a run records it in run.json."""
    from gandissect.engine.runfolder import fingerprint
    from gandissect.models import resolve_generator, resolve_segmenter

    parts = [f"generator {fingerprint(resolve_generator(name))['sha256'][:12]}"]
    if segmenter:
        parts.append(f"segmenter {segmenter} {fingerprint(resolve_segmenter(segmenter))['sha256'][:12]}")
    return ", ".join(parts)


def _loaders() -> list[dict]:
    from gandissect.models import loaders

    return [loaders.describe_loader(loaders.get_loader(family)) for family in loaders.families()]


def _print_loader(loader: dict) -> None:
    """One loader of real checkpoints: what it reads, its options, the files it knows and the command."""
    from gandissect.core.errors import ConfigError
    from gandissect.models.loaders import cache_dir, extra_installed

    print(f"{loader['family']}:FILE ({loader['part']} loader): {loader['description']}")
    print(f"  expects {loader['expects']}")
    if loader["extra"]:
        installed = extra_installed(loader["extra"])
        print(f"  needs pip install 'gandissect[{loader['extra']}]'"
              f" ({'installed' if installed else 'NOT installed'})")
    for key, meaning in loader["options"].items():
        print(f"  option ,{key}=...  {meaning}")
    for known in loader["known"]:
        where = "cached" if known["cached"] else "not cached"
        url = f"  from {known['url']}" if known["url"] else ""
        print(f"  {loader['family']}:{known['name']:<22} {known['filename']} ({where}){url}")
        if known["note"]:
            print(f"      {known['note']}")
    if loader["known"]:
        try:
            print(f"  (known names are looked for in {cache_dir()}, or $GANDISSECT_CACHE)")
        except ConfigError as error:
            print(f"  (known names are looked for in the cache folder, which is unusable: {error})")
    print(f"  tested with {loader['tested']}")
    print(f"  dissect: {loader['example']}")


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch a known checkpoint (see gandissect models) into the cache folder",
                       description="The only command that downloads anything; loading a model never does. It "
                                   "asks for https first (plain http, with a warning, only when the host does not "
                                   "serve https), prints the file's sha256 and records it in the cache folder's "
                                   "downloads.json; loading a cached file that no longer matches prints a warning.")
    p.add_argument("checkpoint", help="family:name, e.g. progan:churchoutdoor")
    p.set_defaults(handler=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from gandissect.models.files import RECORD, read_record
    from gandissect.models.loaders import download
    from gandissect.models.registry import sha256_file

    path = download(args.checkpoint)
    entry = read_record(path.parent).get(path.name)
    where = (f"downloaded from {entry.get('url')} on {entry.get('downloaded')}, recorded in {path.parent / RECORD}"
             if entry else "already in the cache, put there by hand (no download is recorded)")
    print(f"{path} ({path.stat().st_size / 2 ** 20:.1f} MiB, sha256 {sha256_file(path)}): {where}")
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate images (and segment them) and save both as grids: the quick check "
                                      "that a loaded checkpoint draws what it should")
    p.add_argument("--model", default="scenes64", help=spec_help("generator", "scenes64"))
    p.add_argument("--segmenter", default=None, help=spec_help("segmenter", "the model's own; none for others"))
    p.add_argument("--count", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0, help="sample set seed (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="(8)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(handler=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from gandissect.core.errors import ConfigError
    from gandissect.core.images import grid, label_colours, label_palette, to_uint8, with_legend
    from gandissect.core.sampling import sample_z
    from gandissect.core.segmenters import check_labels
    from gandissect.engine.samplepass import check_device
    from gandissect.engine.storage import save_png
    from gandissect.models import default_segmenter_for, resolve_generator, resolve_segmenter

    if not 1 <= args.count <= 4096 or args.batch_size < 1:
        raise ConfigError(f"--count must lie in 1..4096 and --batch-size be positive; got {args.count}, "
                          f"{args.batch_size}")
    device = check_device(args.device)
    generator = resolve_generator(args.model, device)
    segmenter_spec = args.segmenter or default_segmenter_for(args.model)
    segmenter = resolve_segmenter(segmenter_spec, device) if segmenter_spec else None
    images, labels = [], []
    with torch.no_grad():
        for start in range(0, args.count, args.batch_size):
            indices = range(start, min(start + args.batch_size, args.count))
            batch = generator(sample_z(generator, args.seed, indices).to(device)).float()
            images.append(batch.cpu())
            if segmenter is not None:
                segmented = check_labels(segmenter.segment(batch), batch, len(segmenter.concepts))
                labels.append(segmented[:, 0].cpu())
    pictures = torch.cat(images)
    out = Path(args.out)
    columns = min(8, args.count)
    save_png(out / "samples.png", grid(to_uint8(pictures), columns), scale=2 if pictures.shape[-1] <= 128 else 1)
    written = [out / "samples.png"]
    if labels:
        maps = torch.cat(labels)
        shown = [int(i) for i in maps.unique() if i >= 0]  # the legend names the labels drawn, in label order
        names = [str(segmenter.concepts[i]) for i in shown]
        colours = label_palette(max(shown, default=0) + 1)[shown]
        picture = with_legend(grid(label_colours(maps), columns), names, colours)
        save_png(out / "segmentation.png", picture, scale=2 if pictures.shape[-1] <= 128 else 1)
        written.append(out / "segmentation.png")
    low, high = getattr(generator, "output_range", (-1.0, 1.0))
    print(f"{args.count} images of {tuple(pictures.shape[1:])}, values in [{float(pictures.min()):.2f}, "
          f"{float(pictures.max()):.2f}] (declared range [{low}, {high}]); wrote {', '.join(map(str, written))}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_sample(sub)
    _add_models(sub)
    _add_download(sub)
    _add_layers(sub)
