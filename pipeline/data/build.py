"""Build: sources -> Examples -> Records (one model family's text format) -> Arrow dataset on disk.

The dataset lands in a cache folder keyed by a hash of the recipe's data section, the model
family, the uvft code that reads and renders, and the source files' size and mtime, so a second
build with nothing changed is instant. Images are referenced by absolute path, never copied.
Every Example a reader yields has its user text checked against the family's special tokens
before it is rendered (formats/reserved.screen): skipped or repaired, and counted with the
reader's own skips and repairs.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pipeline import __version__, folders, formats, sources
from pipeline.data import mask_codes
from pipeline.errors import DataError
from pipeline.formats import outline, reserved
from pipeline.recipe import Recipe, expand_path, reader_params
from pipeline.records import DEFAULT_LANGUAGE, Example, RecordColumns, Tally, record_features
from pipeline.sources import repairs
from pipeline.tasks import CAPTION

logger = logging.getLogger(__name__)

_CODE_DIRS = ("sources", "formats")  # code whose change must invalidate cached records
_CHUNK = 50_000  # records per Arrow chunk: bounds memory on COCO-sized sources


@dataclass
class SourceSplitStats:
    source: str
    format: str
    split: str
    records: Counter[str] = field(default_factory=Counter)  # per task
    examples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    carved_from: str | None = None  # data.val_fraction: drawn from this split of the source


@dataclass
class BuildStats:
    family: str
    rows: list[SourceSplitStats] = field(default_factory=list)
    target_tokens: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> p50/p95/max
    tokenizer: str | None = None
    licenses: dict[str, str] = field(default_factory=dict)  # source -> license (from its card)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # data.polygon_tolerance at work: {"tolerance", "outline" (vertices read), "target" (kept)}
    polygon_vertices: dict[str, float] = field(default_factory=dict)
    # the codec that made the mask codes (PaliGemma segmentation): {"name", "path", "sha256", ...}
    mask_vae: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "rows": [
                {
                    "source": r.source,
                    "format": r.format,
                    "split": r.split,
                    "records": dict(r.records),
                    "examples": r.examples,
                    "skipped": r.skipped,
                    "repaired": r.repaired,
                    **({"carved_from": r.carved_from} if r.carved_from else {}),
                }
                for r in self.rows
            ],
            "target_tokens": self.target_tokens,
            "tokenizer": self.tokenizer,
            "licenses": self.licenses,
            "warnings": self.warnings,
            "seconds": self.seconds,
            **({"polygon_vertices": self.polygon_vertices} if self.polygon_vertices else {}),
            **({"mask_vae": self.mask_vae} if self.mask_vae else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BuildStats:
        rows = [
            SourceSplitStats(
                source=r["source"],
                format=r["format"],
                split=r["split"],
                records=Counter(r["records"]),
                examples=r["examples"],
                skipped=r["skipped"],
                repaired=r["repaired"],
                carved_from=r.get("carved_from"),
            )
            for r in d["rows"]
        ]
        return cls(
            family=d["family"],
            rows=rows,
            target_tokens=d["target_tokens"],
            tokenizer=d["tokenizer"],
            licenses=d["licenses"],
            warnings=d["warnings"],
            seconds=d["seconds"],
            polygon_vertices=d.get("polygon_vertices", {}),
            mask_vae=d.get("mask_vae", {}),
        )


@dataclass
class BuildResult:
    path: Path  # the cached dataset folder (datasets.load_from_disk reads it)
    stats: BuildStats
    cached: bool  # True when nothing changed and the build was read from the cache

    def load(self):
        """The records as a datasets.DatasetDict, one Dataset per split."""
        from datasets import load_from_disk

        return load_from_disk(str(self.path / "records"))


# --- the build -----------------------------------------------------------------------------------


def build(
    recipe: Recipe,
    *,
    export_jsonl: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> BuildResult:
    """Read every source of the recipe, render records for its model family, and cache them."""
    ensure_demo_data(recipe, progress=progress)
    key = cache_key(recipe)
    out = expand_path(recipe.data.cache_dir) / "records" / f"{recipe.model.family}-{key[:16]}"
    result = None if force else _cached(out)
    if result is None:
        # one build of a cache folder at a time: a second process waits, then uses what the first built
        with folders.locked(out, "uvft build", wait=True):
            result = (None if force else _cached(out)) or _build_fresh(recipe, out, key, progress=progress)
    # Token statistics belong to a tokenizer, not to the records: (re)computed on the cached
    # records when the recipe names a different tokenizer, without rebuilding them.
    wanted = recipe.model.tokenizer or recipe.model.id
    if wanted is not None and wanted != result.stats.tokenizer:
        result.stats.tokenizer, result.stats.target_tokens = _target_token_lengths(recipe, result.load())
        _replace_file(out / "stats.json", json.dumps(result.stats.to_json(), indent=2))
    if export_jsonl is not None:
        export_records_jsonl(result, Path(export_jsonl))
    return result


def _cached(out: Path) -> BuildResult | None:
    if not (out / "stats.json").is_file():
        return None
    return BuildResult(out, BuildStats.from_json(json.loads((out / "stats.json").read_text())), cached=True)


def _replace_file(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)  # readers see the old file or the new one, never half of one


def _build_fresh(recipe: Recipe, out: Path, key: str, *, progress: bool) -> BuildResult:
    # Records go to Arrow as columns (RecordColumns: no dict per row, no per-value encoding), in
    # chunks written to disk as they fill (the build's memory does not grow with the records),
    # then saved in the `datasets` layout. Written next to the final folder, then swapped in (the
    # caller holds the folder's lock): an interrupted build never looks complete, and what a
    # killed one left is removed by the next.
    start = time.perf_counter()
    with folders.writing(
        out, "uvft build", owned=lambda p: (p / "key.txt").is_file(), locked_already=True
    ) as tmp:
        (tmp / "parts").mkdir()
        stats, parts = _write_records(recipe, tmp / "parts", progress=progress)
        _save_records(parts, tmp / "records")
        shutil.rmtree(tmp / "parts")
        stats.seconds = round(time.perf_counter() - start, 2)
        (tmp / "stats.json").write_text(json.dumps(stats.to_json(), indent=2))
        (tmp / "key.txt").write_text(key + "\n")
    return BuildResult(out, stats, cached=False)


def _write_records(recipe: Recipe, folder: Path, *, progress: bool) -> tuple[BuildStats, dict[str, Path]]:
    """Read, render and write every record: one Arrow file per split in `folder`, in the order
    the splits' first chunks filled (the order of the DatasetDict)."""
    from datasets.arrow_writer import ArrowWriter

    from pipeline.sources.paths import Paths

    family = recipe.model.family
    fmt = formats.get(family)
    stats = BuildStats(family=family)
    root = expand_path(recipe.data.root)
    features = record_features()
    writers: dict[str, ArrowWriter] = {}
    pending_columns: dict[str, RecordColumns] = {}
    seen_ids: set[tuple[str, str, str]] = set()
    # every source of the build shares the image verdicts and resolved folders: COCO detection,
    # captions and VQAv2 name the same images
    image_checks: dict[str, Any] = {}
    paths = Paths()
    tolerance = recipe.data.polygon_tolerance
    vertices = [0, 0]  # polygon target vertices before and after data.polygon_tolerance
    # masks written as codes wait for the codec: rendered after the pass (mask_codes)
    pending = mask_codes.Pending(recipe, fmt)

    def append(item: Example, ex_split: str, ex_row: SourceSplitStats, prompt: str, target: str) -> None:
        columns = pending_columns.get(ex_split) or pending_columns.setdefault(ex_split, RecordColumns())
        columns.append(item, family, prompt, target)
        ex_row.records[item.task] += 1
        if len(columns) >= _CHUNK:
            flush(ex_split)

    def flush(split: str) -> None:
        if split not in writers:
            writers[split] = ArrowWriter(features=features, path=str(folder / f"{split}.arrow"))
        writers[split].write_table(pending_columns[split].to_table())
        pending_columns[split] = RecordColumns()

    try:
        for src in recipe.data.sources:
            reader = sources.get(src.format)
            card = _load_card(src.card, stats, src.name)
            for split in src.splits:
                ctx = source_context(recipe, src.name, split, root, image_checks=image_checks, paths=paths)
                tally = ctx.tally
                params = reader_params(reader, src.params(split), root)
                row = SourceSplitStats(source=src.name, format=src.format, split=split)
                carve = _carver(recipe, src, split, root, row, stats)
                bar = tqdm(desc=f"{src.name}/{split}", unit=" ex", disable=not progress, leave=False)
                languages: set[str] = set()
                for ex in reader(ctx, **params):
                    bar.update()
                    # every reader's text, checked in one place for the family's special tokens:
                    # skipped and counted (one bad record), line breaks repaired
                    if not reserved.screen(ex, fmt.RESERVED, tally):
                        continue
                    if ex.language is not None:
                        languages.add(ex.language)
                    ex_split, ex_row = carve(ex) if carve else (split, row)
                    for item in _expand(ex, recipe, ex_split):
                        rid = (src.name, ex_split, item.id)
                        if rid in seen_ids:
                            raise DataError("duplicate example id", file=src.name, record=item.id, field="id")
                        seen_ids.add(rid)
                        if mask_codes.wants_codes(fmt, item):
                            pending.add(item, (ex_split, ex_row))
                            continue
                        shown, before, after = outline.simplified(item, tolerance)
                        vertices[0] += before
                        vertices[1] += after
                        append(item, ex_split, ex_row, *fmt.render(shown))
                bar.close()
                carved = [r.examples for r in stats.rows if r.source == src.name and r.carved_from == split]
                row.examples = tally.examples - sum(carved)
                row.skipped = dict(tally.skipped)
                row.repaired = dict(tally.repaired)
                stats.rows.append(row)
                _check_skips(src.name, split, tally, recipe.data.max_skip_fraction)
                _check_repairs(src.name, split, tally, recipe.data.max_repair_fraction)
                warnings = [
                    _language_warning(fmt, src.name, split, languages),
                    _check_card(card, _card_key(src, split), split, tally.examples) if card else None,
                ]
                for warning in filter(None, warnings):
                    logger.warning(warning)
                    stats.warnings.append(warning)

        stats.mask_vae, coded = pending.finish(progress=progress)
        for item, (ex_split, ex_row) in coded:
            append(item, ex_split, ex_row, *fmt.render(item))
        for split in list(pending_columns):
            if len(pending_columns[split]):
                flush(split)
        if vertices[0]:
            stats.polygon_vertices = {"tolerance": tolerance, "outline": vertices[0], "target": vertices[1]}
        for writer in writers.values():
            writer.finalize()
    finally:
        for writer in writers.values():
            writer.close()
    return stats, {split: folder / f"{split}.arrow" for split in writers}


def source_context(recipe: Recipe, source: str, split: str, root: Path, **shared: Any) -> Any:
    """The SourceContext a reader of `source`/`split` gets: the recipe's image checks and data root,
    a tally of its own, and what the caller shares (image verdicts, resolved folders, prefetch)."""
    return sources.SourceContext(
        name=source,
        split=split,
        tally=Tally(),
        check_images=recipe.data.check_images,
        max_image_pixels=recipe.data.max_image_pixels,
        root=root,
        **shared,
    )


def _carver(
    recipe: Recipe, src: Any, split: str, root: Path, own: SourceSplitStats, stats: BuildStats
) -> Callable[[Example], tuple[str, SourceSplitStats]] | None:
    """For the training split of a source that has no validation split, with data.val_fraction: a
    function that sends an example to the validation split, by its image (so no image is in both;
    seeded with data.seed), or keeps it, with the stats row its records count in. None: nothing to
    carve."""
    data, val = recipe.data, recipe.train.val_split
    if not data.val_fraction or split != data.train_split or val in src.splits:
        return None
    carved = SourceSplitStats(source=src.name, format=src.format, split=val, carved_from=split)
    stats.rows.append(carved)

    def carve(ex: Example) -> tuple[str, SourceSplitStats]:
        if not _in_val(ex.image, root, data.seed, data.val_fraction):
            return split, own
        ex.split = val
        carved.examples += 1
        return val, carved

    return carve


def _in_val(image: str, root: Path, seed: int, fraction: float) -> bool:
    # the image's path under the data root, not the absolute one: moving the data keeps the split
    rel = os.path.relpath(image, root)
    draw = int.from_bytes(hashlib.sha256(f"{seed}:{rel}".encode()).digest()[:8], "big") / 2**64
    return draw < fraction


def _save_records(parts: dict[str, Path], folder: Path) -> None:
    """The per-split Arrow files as a DatasetDict saved to `folder` (datasets.load_from_disk)."""
    from datasets import Dataset, DatasetDict

    dsd = DatasetDict({split: Dataset.from_file(str(path)) for split, path in parts.items()})
    with _quiet_datasets():  # our own bars already showed the work; saving is a blink
        dsd.save_to_disk(str(folder))


@contextlib.contextmanager
def _quiet_datasets():
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def _expand(ex: Example, recipe: Recipe, split: str) -> list[Example]:
    """Captions in the training split: one Example per reference, or one sampled reference."""
    if ex.task != CAPTION or split != recipe.data.train_split or len(ex.captions) <= 1:
        return [ex]
    if recipe.data.caption_targets == "per_caption":
        return [_with_caption(ex, f"{ex.id}#{i}", c) for i, c in enumerate(ex.captions)]
    # Seeded by recipe seed and example id: the same caption for the same image in every build.
    rng = random.Random(f"{recipe.data.seed}:{ex.source}:{ex.id}")
    return [replace(ex, caption=rng.choice(ex.captions))]


def _with_caption(ex: Example, id: str, caption: str) -> Example:
    # dataclasses.replace without re-running __post_init__: ex was validated, caption is a str
    item = copy.copy(ex)
    item.id, item.caption = id, caption
    return item


def _language_warning(fmt: Any, source: str, split: str, languages: set[str]) -> str | None:
    """A warning when a format whose prompts name no language is given text in other languages."""
    other = sorted(languages - {DEFAULT_LANGUAGE})
    if fmt.PROMPTS_NAME_LANGUAGE or not other:
        return None
    return (
        f"{source}/{split}: text in {', '.join(other)}, but {fmt.FAMILY}'s prompts name no language "
        "(it was pretrained in English only): captions in several languages share one prompt"
    )


def _check_skips(source: str, split: str, tally: Tally, limit: float) -> None:
    if tally.skip_fraction > limit:
        skipped = sum(tally.skipped.values())
        reasons = ", ".join(f"{n} {r}" for r, n in tally.skipped.most_common())
        raise DataError(
            f"skipped {skipped} of {tally.examples + skipped} examples "
            f"({tally.skip_fraction:.1%} > data.max_skip_fraction {limit:.1%}): {reasons}",
            file=f"source {source}, split {split}",
        )


def _check_repairs(source: str, split: str, tally: Tally, limit: float) -> None:
    """Fail a source/split whose repairs say the data is laid out wrong (sources/repairs.py): the
    wrong targets would otherwise be trained, repaired, with a count at INFO as the only sign."""
    found = repairs.findings(tally, limit)
    if found:
        raise DataError(
            f"{'; '.join(found)}. Fix the data, or set data.max_repair_fraction: 1.0 (now {limit:g}) "
            "to train on it as repaired",
            file=f"source {source}, split {split}",
        )


def _load_card(card_path: str | None, stats: BuildStats, source: str):
    if card_path is None:
        return None
    from pipeline.data.cards import load_card

    card = load_card(expand_path(card_path))
    stats.licenses[source] = card.license
    return card


def _card_key(src: Any, split: str) -> str:
    """What a card's counts are keyed by for this source: its format, or `format:task` when the
    source asks its reader for another task than the reader's default (coco_detection reads five
    tasks, each yielding another count of examples)."""
    import inspect

    task = src.params(split).get("task")
    param = inspect.signature(sources.get(src.format)).parameters.get("task")
    default = None if param is None else param.default
    return src.format if task is None or task == default else f"{src.format}:{task}"


def _check_card(card: Any, fmt: str, split: str, actual: int) -> str | None:
    from pipeline.data.cards import check_counts

    return check_counts(card, fmt, split, actual)


def ensure_demo_data(recipe: Recipe, *, progress: bool = True) -> None:
    """The demo recipe generates its synthetic shapes set when its folder is missing."""
    pending = demo_data_pending(recipe)
    if pending is None:
        return
    from pipeline.demo import shapes

    root = expand_path(recipe.data.root)
    if pending == "stale":
        logger.info("the shapes set in %s was generated with other parameters: regenerating it", root)
    else:
        logger.info("generating the demo shapes set in %s", root)
    shapes.generate(root, **_demo_params(recipe), progress=progress)


def demo_data_pending(recipe: Recipe) -> str | None:
    """What `ensure_demo_data` would do: "missing" (generate the set), "stale" (regenerate a set
    written with other parameters), or None (no data.demo, the set asked for, or a folder that is
    not a generated set: left alone)."""
    if recipe.data.demo is None:
        return None
    from pipeline.demo import shapes

    root = expand_path(recipe.data.root)
    if not root.exists():
        return "missing"
    written = shapes.written_params(root)
    if written == _demo_params(recipe) or (written is None and not (root / "README.md").is_file()):
        return None
    return "stale"


def _demo_params(recipe: Recipe) -> dict[str, Any]:
    from pipeline.demo import shapes

    assert recipe.data.demo is not None
    return shapes.canonical_params(recipe.data.demo.model_dump(mode="json"))  # as shapes.json holds them


# --- cache key -----------------------------------------------------------------------------------


def cache_key(recipe: Recipe) -> str:
    """Hash of what decides the records: data section, family, uvft's reading/rendering code, and
    the inputs' size + mtime (files) or mtime (folders, walked; their files are not stat'ed, so
    a build over a COCO-sized image folder stays instant)."""
    h = hashlib.sha256()
    h.update(__version__.encode())
    h.update(recipe.model.family.encode())
    h.update(json.dumps(recipe.data.model_dump(mode="json"), sort_keys=True).encode())
    pkg = Path(__file__).resolve().parent.parent
    for sub in _CODE_DIRS:
        for f in sorted((pkg / sub).glob("*.py")):
            h.update(f.read_bytes())
    h.update((pkg / "records.py").read_bytes())
    h.update(Path(__file__).read_bytes())
    if formats.get(recipe.model.family).MASK_CODES:  # the codec decides the targets
        h.update(mask_codes.key(recipe).encode())
        for module in (mask_codes, mask_codes.vqvae):
            h.update(Path(module.__file__).read_bytes())
    root = expand_path(recipe.data.root)
    for src in recipe.data.sources:
        reader = sources.get(src.format)
        if src.card:
            h.update(_fingerprint(expand_path(src.card)).encode())
        for split in src.splits:
            for value in reader_params(reader, src.params(split), root).values():
                if isinstance(value, Path):
                    h.update(_fingerprint(value).encode())
    return h.hexdigest()


def _fingerprint(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path}:missing"
    if not path.is_dir():
        return f"{path}:{st.st_size}:{st.st_mtime_ns}"
    parts = []
    for dirpath, dirnames, _ in os.walk(path):
        dirnames.sort()
        parts.append(f"{dirpath}:{os.stat(dirpath).st_mtime_ns}")
    return "|".join(parts)


# --- token lengths and export --------------------------------------------------------------------


def _target_token_lengths(recipe: Recipe, dsd: Any) -> tuple[str | None, dict[str, dict[str, float]]]:
    """p50 / p95 / max target length in tokens per task, when the recipe's tokenizer can be loaded
    from a local folder or the local hub cache (never downloaded during a build)."""
    import numpy as np

    name = recipe.model.tokenizer or recipe.model.id
    if name is None:
        return None, {}
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name, revision=recipe.model.revision, local_files_only=True)
    except Exception as e:  # any failure here only costs the token statistics
        logger.info("no tokenizer for target lengths (%s): %s", name, type(e).__name__)
        return None, {}
    lengths: dict[str, list[int]] = {}
    for ds in dsd.values():
        tasks, targets = ds["task"], ds["target"]
        for i in range(0, len(targets), 10_000):  # batched: the fast tokenizer parallelises a batch
            ids = tok(list(targets[i : i + 10_000]), add_special_tokens=False)["input_ids"]
            for task, seq in zip(tasks[i : i + 10_000], ids, strict=True):
                lengths.setdefault(task, []).append(len(seq))
    out = {
        task: {
            "p50": float(np.percentile(v, 50)),
            "p95": float(np.percentile(v, 95)),
            "max": float(max(v)),
        }
        for task, v in lengths.items()
    }
    return name, out


def export_records_jsonl(result: BuildResult, path: Path) -> int:
    """Write every record, every split, as one JSON object per line; return the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        for ds in result.load().values():
            for rec in ds:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
    tmp.replace(path)
    return n


# --- the stats table -----------------------------------------------------------------------------


def print_stats(result: BuildResult, console: Any | None = None) -> None:
    """The tables `uvft build` prints: records per source x task x split, skips and repairs with
    their reasons, target lengths in tokens, the sources' licenses, and card warnings."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        # Never narrower than the table: piped output (CI logs) would otherwise truncate names.
        console = Console(width=max(Console().width, 132))
    stats = result.stats
    state = "cached, nothing changed" if result.cached else f"built in {stats.seconds:.1f} s"
    table = Table(title=f"records for {stats.family} ({state})")
    for col in ("source", "format", "split", "task", "examples", "records", "skipped", "repaired"):
        table.add_column(
            col, justify="right" if col in ("examples", "records", "skipped", "repaired") else "left"
        )
    totals: Counter[str] = Counter()
    for r in stats.rows:
        for task, n in sorted(r.records.items()) or [("-", 0)]:
            table.add_row(
                r.source,
                r.format,
                f"{r.split} (from {r.carved_from})" if r.carved_from else r.split,
                task,
                str(r.examples),
                str(n),
                str(sum(r.skipped.values())),
                str(sum(r.repaired.values())),
            )
            totals[r.split] += n
    table.add_section()
    for split, n in sorted(totals.items()):
        table.add_row("total", "", split, "", "", str(n), "", "")
    console.print(table)

    reasons = [
        (r.source, r.split, kind, reason, n)
        for r in stats.rows
        for kind, counter in (("skipped", r.skipped), ("repaired", r.repaired))
        for reason, n in sorted(counter.items())
    ]
    if reasons:
        rt = Table(title="skipped and repaired, by reason")
        for col in ("source", "split", "what", "reason", "count"):
            rt.add_column(col, justify="right" if col == "count" else "left")
        for row in reasons:
            rt.add_row(*row[:4], str(row[4]))
        console.print(rt)

    if stats.target_tokens:
        tt = Table(title=f"target length in tokens ({stats.tokenizer})")
        for col in ("task", "p50", "p95", "max"):
            tt.add_column(col, justify="left" if col == "task" else "right")
        for task, v in sorted(stats.target_tokens.items()):
            tt.add_row(task, f"{v['p50']:.0f}", f"{v['p95']:.0f}", f"{v['max']:.0f}")
        console.print(tt)
    else:
        console.print("target length in tokens: no tokenizer available for this recipe (model.tokenizer)")
    if v := stats.polygon_vertices:
        console.print(
            f"polygon targets within {v['tolerance']:g} px of their outlines (data.polygon_tolerance): "
            f"{v['outline']:,} vertices -> {v['target']:,}; records keep the outlines for scoring"
        )
    if m := stats.mask_vae:
        fitted = f", fitted on {m['masks']:,} training masks" if "masks" in m else ""
        console.print(
            f"mask codes by the {m['name']} VQ-VAE (model.mask_vae){fitted}: {m['path']} "
            f"(sha256 {m['sha256'][:12]}…)"
        )
    for source, lic in sorted(stats.licenses.items()):
        console.print(f"license of {source}: {lic}")
    for w in stats.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    console.print(f"records: {result.path / 'records'}")
