"""gandissect against the paper's own code (CSAILVision/gandissect), side by side, as whole processes.

    python benchmarks/bench_paper.py --paper ~/src/gandissect-paper [--samples 1000] [--layers layer3] [--pairs 3]
        [--paper-python ~/paper-venv/bin/python] [--paper-path ~/torchvision-stand-in]
    python benchmarks/bench_paper.py --samples 1000          # gandissect alone (no checkout given)

Both sides dissect the shipped scenes64 generator with scenes64's own segmenter, IQR mode, batch 32, on the
CPU, as separate processes run alternately (a pair at a time), so start-up (imports, model loading) counts
on both sides. For each process the script reports wall seconds, CPU seconds (user + system of the child) and
its peak resident memory, then medians over the pairs and the ratios paper / gandissect.

The paper's side runs `python -m netdissect --gan` from the checkout (`--paper`, put first on PYTHONPATH,
never imported here) with an adapter module written to a temporary folder: `generator()` returns scenes64's
generator and `segmenter()` wraps scenes64's segmenter in the paper's segmenter interface (label 0 = none,
`segment_batch(images, downsample)`). It runs under `--paper-python` (default: this interpreter), with
`--paper-path` folders (e.g. a torchvision stand-in) and this gandissect's own source folder (for the adapter)
on its PYTHONPATH. The checkout must run on that interpreter's libraries as it is: the paper's code needs
torchvision (or a stand-in that names its transforms), scikit-image, scipy and a few fixes for today's PyTorch
and numpy (align_corners=True in its three grid_sample calls, allow_pickle in numpy.load, object arrays for the
ragged lists its statistics save); none of that is installed or patched by this script. A paper run counts
only when it wrote its `done.txt` and its `iqr.npz` for every layer. The gandissect side runs `gandissect
dissect --no-report` with `--passes` (default auto).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ADAPTER = textwrap.dedent('''
    """scenes64 in the paper code's interfaces (written by gandissect's benchmarks/bench_paper.py)."""
    import torch

    from gandissect.models import load

    def generator():
        return load("scenes64").generator.eval()

    class Segmenter:
        """scenes64's segmenter: labels shifted by one (0 = no label), subsampled by `downsample`."""

        def __init__(self):
            self.inner = load("scenes64").segmenter

        def get_label_and_category_names(self):
            names = list(zip(self.inner.concepts, self.inner.categories))
            return [("-", "-")] + names, sorted(set(self.inner.categories))

        def segment_batch(self, tensor_images, downsample=1):
            with torch.no_grad():
                labels = self.inner.segment(tensor_images).long()
            return (labels + 1).clamp(min=0)[:, :, ::downsample, ::downsample]

    def segmenter():
        return Segmenter()
''')


def timed_process(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Run `command` to completion; its wall and CPU seconds and peak resident memory (MiB). Raises on failure."""
    with tempfile.TemporaryFile() as log:
        began = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource use
        wall = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(command[:4])} ... failed ({process.returncode}):\n"
                             f"{log.read().decode(errors='replace')[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}


def gandissect_command(args: argparse.Namespace, out: Path) -> list[str]:
    return [str(Path(sys.executable).with_name("gandissect")), "dissect", "--model", "scenes64",
            "--segmenter", "scenes64", "--layers", args.layers, "--samples", str(args.samples), "--batch-size", "32",
            "--label-method", "iqr", "--passes", args.passes, "--out", str(out), "--no-report", "--force"]


def paper_command(args: argparse.Namespace, out: Path) -> list[str]:
    return [str(args.paper_python), "-m", "netdissect", "--gan", "--model", "paper_adapter.generator()",
            "--segmenter", "paper_adapter.segmenter()", "--layers", *args.layers.split(","),
            "--size", str(args.samples), "--batch_size", "32", "--num_workers", "0", "--no-cuda",
            "--quantile_threshold", "iqr", "--no-images", "--no-report", "--quiet", "--outdir", str(out)]


def paper_finished(args: argparse.Namespace, out: Path) -> None:
    """Stop unless the paper's run in `out` went through IQR labelling for every layer (it exits 0 early when
    it finds a finished run, and its --quiet hides most failures)."""
    missing = [str(path) for path in [out / "done.txt", *(out / layer / "iqr.npz" for layer in args.layers.split(","))]
               if not path.is_file()]
    if missing:
        raise SystemExit(f"the paper's run did not finish: no {', '.join(missing)}")


def python_paths(*folders: str) -> str:
    return os.pathsep.join(folder for folder in folders if folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", type=Path, default=None, help="a checkout of CSAILVision/gandissect")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--layers", default="layer3")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--paper-python", type=Path, default=Path(sys.executable),
                        help="interpreter for the paper's side (one with its libraries)")
    parser.add_argument("--paper-path", action="append", default=[],
                        help="extra folder on the paper side's PYTHONPATH (repeatable), e.g. a torchvision stand-in")
    parser.add_argument("--passes", default="auto", choices=("auto", "one", "two"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.paper is not None and not (args.paper / "netdissect" / "__main__.py").is_file():
        raise SystemExit(f"{args.paper} is not a checkout of CSAILVision/gandissect (no netdissect/__main__.py)")
    runs: dict[str, list[dict[str, float]]] = {"gandissect": []} | ({"paper": []} if args.paper else {})
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        (scratch_path / "paper_adapter.py").write_text(ADAPTER)
        env = dict(os.environ)
        paper_env = env | {"PYTHONPATH": python_paths(
            str(args.paper.resolve()) if args.paper else "", *(str(Path(p).resolve()) for p in args.paper_path),
            str(Path(importlib.util.find_spec("gandissect").origin).parents[1]), scratch, env.get("PYTHONPATH", ""))}
        for pair in range(args.pairs):
            out = scratch_path / f"run{pair}"
            runs["gandissect"].append(timed_process(gandissect_command(args, out / "ours"), env, scratch_path))
            if args.paper:
                runs["paper"].append(timed_process(paper_command(args, out / "paper"), paper_env, scratch_path))
                paper_finished(args, out / "paper")
            print(json.dumps({name: values[-1] for name, values in runs.items()}), file=sys.stderr)
    medians = {name: {key: statistics.median(run[key] for run in values) for key in ("wall", "cpu")}
               for name, values in runs.items()}
    figures = {"samples": args.samples, "layers": args.layers.split(","), "pairs": args.pairs,
               "passes": args.passes, "load_average": {"before": load_before, "after": os.getloadavg()},
               "runs": runs, "medians": medians}
    if args.paper:
        figures["ratio_paper_over_gandissect"] = {key: medians["paper"][key] / medians["gandissect"][key]
                                                  for key in ("wall", "cpu")}
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
