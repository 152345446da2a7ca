"""`SourceContext`: what the build hands every reader for one source and split (the names its
Examples carry, the tally it counts in, the image checks' settings, and the caches the build's
sources share). Its own module so that the readers' helpers (images.py) and the readers import it
without importing the registry, which imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.records import Example, ImageSize, Tally
from pipeline.sources.paths import Paths


@dataclass
class SourceContext:
    name: str  # the recipe's name for this source: becomes Example.source
    split: str  # becomes Example.split
    tally: Tally = field(default_factory=Tally)
    check_images: str = "full"  # "full": decode every image once; "header": size and mode only
    max_image_pixels: int = 89_478_485  # PIL's default bomb limit; larger images are skipped
    root: Path | None = None  # the recipe's data root, for parameters that may be a path or a name
    # Shared by every source of one build (each makes its own when not given): image verdicts by
    # path (images.check_image), and resolved folders for confining paths.
    image_checks: dict[Any, Any] = field(default_factory=dict)
    paths: Paths = field(default_factory=Paths)
    # False: no image is checked ahead of the reader (images.prefetch_checks), each one as the
    # reader reaches it: for `uvft check`, which reads one record of a source
    prefetch: bool = True

    def example(self, id: str, image: Path | str, image_size: ImageSize, **fields: Any) -> Example:
        """An Example of this source and split (what a reader yields), counted in the tally."""
        self.tally.examples += 1
        return Example(
            id=id, image=str(image), image_size=image_size, source=self.name, split=self.split, **fields
        )
