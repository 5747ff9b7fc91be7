"""The size of a run folder for a 512-unit layer of a 256x256 generator (issue: reports that scale).

    python benchmarks/bench_report_size.py [--out /tmp/report-size] [--samples 32] [--layer layer6]

Builds StyleGAN2-256 with random weights (seed 0; config-F channels, so layer6 has 512 units at 32x32),
dissects one layer with the colour segmenter on `--samples` samples (no report), then times `gandissect
report` and prints the sizes of every file of the run folder and of the report's parts as JSON. Random
weights: the figures are sizes and times, not meaning.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

FACTORY = """
import torch
from gandissect.models.stylegan2 import StyleGAN2Generator


def make():
    torch.manual_seed(0)
    generator = StyleGAN2Generator(256, truncation=0.7)
    generator.estimate_w_avg()
    return generator.eval()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/report-size")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--layer", default="layer6")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "factory.py").write_text(FACTORY)
    model = f"{out / 'factory.py'}:make"
    run = out / "run"
    command = [sys.executable, "-m", "gandissect.cli"]
    began = time.perf_counter()
    subprocess.run([*command, "dissect", "--model", model, "--segmenter", "color", "--layers", args.layer,
                    "--samples", str(args.samples), "--batch-size", "8", "--out", str(run), "--force", "--no-report"],
                   check=True)
    dissect_seconds = time.perf_counter() - began
    began = time.perf_counter()
    subprocess.run([*command, "report", str(run), "--model", model], check=True)
    report_seconds = time.perf_counter() - began
    text = (run / "report.html").read_text()
    pictures = re.findall(r'<img class="picture" src="([^"]+)"', text)
    overlays = re.findall(r'<img class="overlay" src="([^"]+)"', text)
    files = {p.name: p.stat().st_size for p in sorted(run.iterdir()) if p.is_file()}
    print(json.dumps({
        "dissect_seconds": round(dissect_seconds, 1), "report_seconds": round(report_seconds, 1),
        "files_bytes": files,
        "folder_without_statistics_bytes": sum(v for k, v in files.items() if k != "statistics.safetensors"),
        "report": {"pictures": len(pictures), "pictures_bytes": sum(map(len, pictures)),
                   "overlays": len(overlays), "overlays_bytes": sum(map(len, overlays))},
    }, indent=1))


if __name__ == "__main__":
    main()
