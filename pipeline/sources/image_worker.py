"""A worker of `images.prefetch_checks`: `python -m pipeline.sources.image_worker CHECK MAX_PIXELS
LISTING OUT` inspects the images the JSON list of paths in LISTING names, in order, and writes one
JSON line per image to OUT: `[size, skip, repairs]` of its ImageCheck."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.sources.images import inspect_image


def main(argv: list[str]) -> int:
    check, max_pixels, listing, output = argv
    limit = None if max_pixels == "None" else int(max_pixels)
    with open(output, "w", encoding="utf-8") as out:
        for path in json.loads(Path(listing).read_text()):
            verdict = inspect_image(Path(path), check=check, max_pixels=limit)
            out.write(json.dumps([verdict.size, verdict.skip, list(verdict.repairs)]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
