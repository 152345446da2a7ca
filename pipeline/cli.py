"""`uvft` command line: parse arguments, load the recipe, call one function."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import __version__, tasks
from pipeline.demo.layout import EXTRA_TASKS
from pipeline.errors import UvftError
from pipeline.families import DEFAULT_FAMILY, FAMILIES
from pipeline.folders import disk_full
from pipeline.records import CAPTION_LEVELS
from pipeline.train.signals import TrainingStopped

DEFAULT_RECIPE = "recipes/demo.yaml"

# Notices of other libraries that say nothing a uvft user can act on: they are about choices uvft
# makes (the adapter's tied embeddings, the pinned generation config) or calls between libraries.
# Silenced by the command line only (a library must not change its user's filters); `-v` shows them.
QUIET_WARNINGS = (  # (category, module the warning is raised in, message start), as filterwarnings
    (FutureWarning, r"transformers\.", ""),  # methods renamed, for peft's calls: `is_gradient_checkpointing`
    (UserWarning, r"peft\.", r".*tie_word_embeddings"),  # the adapter trains tied embeddings; merging unties
)
QUIET_LOGS = {  # logger -> message starts, of transformers' logged notices
    "transformers.generation.configuration_utils": ("The following generation flags are not valid",),
    "transformers.generation.utils": ("Both `max_new_tokens`",),  # uvft pins max_new_tokens on purpose
    # a merged export's embeddings are untied by the merge: loaded as saved
    "transformers.modeling_utils": ("The tied weights mapping and config for this model specifies to tie",),
}


def at_least(low: int) -> Any:
    """An argparse type: a whole number >= `low` (a batch of 0 or a negative limit is refused while
    the command line is read, before anything is loaded)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {n}")
        return n

    parse.__name__ = f"whole number >= {low}"  # what argparse names in its own messages
    return parse


def fraction(*, above_zero: bool = False) -> Any:
    """An argparse type: a number in [0, 1] ((0, 1] with `above_zero`); NaN is none."""

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (0.0 < x <= 1.0 if above_zero else 0.0 <= x <= 1.0):
            raise argparse.ArgumentTypeError(
                f"must be {'above 0 and at most' if above_zero else 'between 0 and'} 1, got {text}"
            )
        return x

    parse.__name__ = "number"
    return parse


def box_argument(text: str) -> list[float]:
    """An argparse type: a box `x1,y1,x2,y2` (four numbers; that it fits the image is checked
    once the image is read)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not four numbers x1,y1,x2,y2") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not four numbers x1,y1,x2,y2")
    return values


box_argument.__name__ = "box"


class _MinMax(argparse.Action):
    """Two numbers MIN MAX, refused unless MIN <= MAX."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        if values[0] > values[1]:
            parser.error(f"argument {option}: MIN {values[0]:g} is above MAX {values[1]:g}")
        setattr(namespace, self.dest, tuple(values))


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "recipe", nargs="?", default=DEFAULT_RECIPE, help=f"recipe YAML (default: {DEFAULT_RECIPE})"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides of recipe keys, e.g. model.family=paligemma data.seed=3",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uvft",
        description="Multitask fine-tuning of unified vision-language models (Florence-2, PaliGemma).",
    )
    parser.add_argument("--version", action="version", version=f"uvft {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, and other libraries' notices uvft hides"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", help="read a recipe's sources and write its records (cached)")
    _add_recipe_args(p)
    p.add_argument("--export-jsonl", type=Path, metavar="PATH", help="also write every record as JSON lines")
    p.add_argument(
        "--export",
        nargs=2,
        metavar=("FORMAT", "PATH"),
        help="also export the records for other trainers: FORMAT chat-jsonl (see the README)",
    )
    p.add_argument(
        "--embed-images", action="store_true", help="chat-jsonl: images as base64 data URLs, not paths"
    )
    p.add_argument("--force", action="store_true", help="rebuild even when the cache is up to date")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser(
        "finetune", help="fine-tune (LoRA or full) on a recipe's records; adapter in runs/<name>"
    )
    _add_recipe_args(p)
    p.add_argument(
        "--resume", metavar="auto|PATH", help="resume from the run's latest checkpoint (auto) or a path"
    )
    p.add_argument("--overwrite", action="store_true", help="start over, deleting the run's old checkpoints")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when CUDA is available")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser(
        "eval", help="generate on a split and score every task; evidence in <run>/eval/<split>/"
    )
    _add_recipe_args(p)
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--adapter", type=Path, metavar="RUN_DIR", help="adapter folder (default: the recipe's run)"
    )
    who.add_argument("--base", action="store_true", help="evaluate the base model without the adapter")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=at_least(1), metavar="N", help="at most N records per task")
    p.add_argument(
        "--batch-size",
        type=at_least(1),
        help="generation batch size (default: the recipe's eval.batch_size)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("push", help="upload a run's adapter (or merged model) to the Hugging Face hub")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder (or <run>/best)")
    p.add_argument("--repo-id", required=True, metavar="NAME", help="hub repo, namespace/name")
    p.add_argument("--merged", action="store_true", help="push the merged full model instead of the adapter")
    p.add_argument(
        "--base-repo-id", metavar="NAME", help="push a local base model there too and point the adapter at it"
    )
    p.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--revision", metavar="BRANCH", help="commit to this branch (created when missing)")
    p.add_argument("--commit-message", metavar="TEXT")
    p.add_argument("--split", default="val", help="the evaluation split the card reports (default: val)")
    p.add_argument(
        "--allow-limited",
        action="store_true",
        help="publish an evaluation of a sample (uvft eval --limit); the card says so (default: refused)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="prepare the folder and validate the card; upload nothing"
    )
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("export", help="export a run as a full model folder (adapter merged into its base)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--merged", type=Path, required=True, metavar="OUT", help="the folder to write")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT though uvft did not write it (default: refused)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="run a trained model on images (run folder, export or hub id)")
    p.add_argument(
        "--model",
        required=True,
        metavar="RUN_DIR|HUB_ID",
        help="a run folder, <run>/best, a merged export, or a hub id namespace/name (a path that is not "
        "there is an error listing the folders beside it, never a hub lookup)",
    )
    p.add_argument("--revision", metavar="REV", help="hub revision (with a hub id)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, metavar="PATH")
    src.add_argument(
        "--images",
        type=Path,
        metavar="DIR|LIST.txt|FILE.jsonl",
        help="many images: a folder, a text file of paths, or JSON lines "
        "{image, task?, question?, classes?, phrase?, language?, level?, region?}",
    )
    p.add_argument(
        "--task",
        choices=tasks.names(),
        metavar="TASK",
        help=f"{', '.join(tasks.names())} (default: the model's first)",
    )
    p.add_argument("--question", help="the question, for --task vqa")
    p.add_argument("--phrase", help="the expression to locate, for --task grounding or segmentation")
    p.add_argument("--language", help="caption / vqa: the language to answer in (PaliGemma; default en)")
    p.add_argument(
        "--level", choices=CAPTION_LEVELS, help="caption: how much detail (default brief; as trained)"
    )
    p.add_argument(
        "--region",
        type=box_argument,
        metavar="X1,Y1,X2,Y2",
        help="region_to_category / _description / _ocr / _segmentation: the box asked about, in pixels",
    )
    p.add_argument(
        "--classes",
        action="append",
        metavar="NAMES",
        help="detection: the categories to look for, and the only ones kept (other boxes are listed as "
        "dropped); classification: the closed-set candidates. Comma-separated (--classes car,bus), or "
        "the flag repeated with one name each, taken whole (--classes 'traffic light' --classes car): "
        "a name with a comma goes that way, or in the JSONL items' classes list",
    )
    p.add_argument(
        "--threshold",
        type=fraction(),
        metavar="SCORE",
        help="detection, grounding: drop boxes scoring below SCORE (0-1), listed as dropped",
    )
    p.add_argument(
        "--out", type=Path, metavar="PNG", help="--image: draw the prediction here (boxes, masks, text)"
    )
    p.add_argument("--output", type=Path, metavar="JSONL", help="--images: write here (default: stdout)")
    p.add_argument("--json", action="store_true", help="--image: print JSON instead of text")
    p.add_argument("--batch-size", type=at_least(1), default=16)
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("data", help="data utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    d = data_sub.add_parser("demo", help="generate the synthetic shapes demo set in its real on-disk formats")
    d.add_argument(
        "--out", type=Path, default=Path("data/shapes"), help="output folder (default: data/shapes)"
    )
    # unset options take the generator's own defaults (pipeline/demo/shapes.py: generate)
    d.add_argument("--n-train", type=at_least(0))
    d.add_argument("--n-val", type=at_least(0))
    d.add_argument("--image-size", type=at_least(32), help="pixels (at least 32: shapes stay recognisable)")
    d.add_argument("--max-shapes", type=at_least(1))
    d.add_argument(
        "--shape-size",
        type=fraction(above_zero=True),
        nargs=2,
        action=_MinMax,
        metavar=("MIN", "MAX"),
        help="a shape's side as fractions of the image side (0 < MIN <= MAX <= 1)",
    )
    d.add_argument("--seed", type=at_least(0))
    d.add_argument(
        "--extra-tasks",
        nargs="+",
        choices=EXTRA_TASKS,
        help="also write the referring-expression (grounding, segmentation), OCR and German-caption sets",
    )
    d.add_argument("--force", action="store_true", help="replace the folder if it exists")
    d.set_defaults(func=cmd_data_demo)

    p = sub.add_parser(
        "init",
        help="write a commented recipe for your own data from its paths (COCO, VQAv2, JSONL, ImageFolder)",
    )
    p.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="annotation files, JSONL files, ImageFolders"
    )
    p.add_argument("--out", type=Path, required=True, metavar="RECIPE.yaml", help="the recipe to write")
    p.add_argument("--family", default=DEFAULT_FAMILY, choices=FAMILIES, help=f"default: {DEFAULT_FAMILY}")
    p.add_argument("--model", metavar="ID", help="hub id or folder (default: the family's base checkpoint)")
    p.add_argument("--force", action="store_true", help="replace the recipe if it exists")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "check",
        help="validate a recipe, find its data and check its model against its family; "
        "ends in a verdict (exit 0: ready, 2: problems)",
    )
    _add_recipe_args(p)
    p.add_argument("--print", action="store_true", help="also print the resolved recipe (as -v does)")
    p.set_defaults(func=cmd_check)
    return parser


def cmd_build(args: argparse.Namespace) -> int:
    from pipeline.data.build import build, export_records_jsonl, print_stats
    from pipeline.data.export import EXPORT_FORMATS, export_chat_jsonl
    from pipeline.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.export and args.export[0] not in EXPORT_FORMATS:
        raise UvftError(f"--export {args.export[0]!r}: known formats: {', '.join(EXPORT_FORMATS)}")
    if args.embed_images and not (args.export and args.export[0] == "chat-jsonl"):
        raise UvftError("--embed-images goes with --export chat-jsonl PATH")
    result = build(recipe, export_jsonl=args.export_jsonl, force=args.force, progress=not args.no_progress)
    print_stats(result)
    if args.export_jsonl:
        print(f"exported: {args.export_jsonl}")
    if args.export:
        fmt, path = args.export[0], Path(args.export[1])
        if fmt == "jsonl":
            counts = {"all": export_records_jsonl(result, path)}
        else:
            counts = export_chat_jsonl(
                result.load(), path, embed_images=args.embed_images, progress=not args.no_progress
            )
        print(f"exported {sum(counts.values())} records as {fmt} to {path}: {counts}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from pipeline.check import preflight
    from pipeline.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    preflight(recipe)  # a wrong model id or data path: one line now, before any build, load or download
    from pipeline.train.loop import print_summary, train

    summary = train(
        recipe, resume=args.resume, progress=not args.no_progress, cpu=args.cpu, overwrite=args.overwrite
    )
    if int(os.environ.get("RANK", "0")) == 0:  # one table from a multi-process launch
        print_summary(summary)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pipeline.evaluation.run import evaluate_run, evidence_dir, print_metrics
    from pipeline.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    adapter = None if args.base else (args.adapter or recipe.run_dir)
    out, metrics = evaluate_run(
        recipe,
        adapter=adapter,
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    base_file = evidence_dir(recipe.run_dir, None, args.split) / "metrics.json"
    base_metrics = json.loads(base_file.read_text()) if adapter is not None and base_file.is_file() else None
    print_metrics(metrics, base_metrics)
    print(f"generations, metrics and report: {out}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from pipeline.hub import push

    options = (
        "merged",
        "base_repo_id",
        "public",
        "create_pr",
        "revision",
        "commit_message",
        "dry_run",
        "split",
        "allow_limited",
    )
    result = push(args.run_dir, args.repo_id, **{k: getattr(args, k) for k in options})
    for staged in (result.staged.base, result.staged):
        if staged is None:
            continue
        total = sum(size for _, size in staged.files)
        print(f"{staged.repo_id}: {len(staged.files)} files, {_size(total)}, staged in {staged.folder}")
        for name, size in staged.files:
            print(f"  {_size(size):>10}  {name}")
    if args.dry_run:
        print("dry run: the model card validated; nothing was uploaded")
        return 0
    visibility = "private" if result.private else "public"
    if result.base_commit_url:
        print(f"base model pushed: {result.base_commit_url}")
    if result.unchanged:
        print(f"{args.repo_id} ({visibility}) already holds these files: nothing to commit")
    else:
        print(f"pushed ({visibility}): {result.pr_url or result.commit_url}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def cmd_export(args: argparse.Namespace) -> int:
    from pipeline.hub import export_merged

    out = export_merged(args.run_dir, args.merged, overwrite=args.overwrite)
    print(f"merged model written to {out} (from_pretrained loads it without peft)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.inference import (
        BOX_TASKS,
        draw_prediction,
        format_prediction,
        load_model,
        parse_classes,
        read_items,
    )

    if args.out is not None and args.image is None:
        raise UvftError("--out draws one image: use it with --image")
    if args.threshold is not None and args.task is not None and args.task not in BOX_TASKS:
        raise UvftError(f"--threshold is for the tasks answered with boxes ({', '.join(BOX_TASKS)})")
    items = read_items(
        args.image or args.images,
        args.task,
        question=args.question,
        classes=parse_classes(args.classes),
        phrase=args.phrase,
        language=args.language,
        level=args.level,
        region=args.region,
    )
    model = load_model(args.model, revision=args.revision, device=args.device)
    for item in items:
        item["task"] = item["task"] or model.tasks[0]
    if args.image is not None:
        result = model.predict_many(items, progress=False, threshold=args.threshold)[0]
        print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_prediction(result))
        if args.out is not None:
            draw_prediction(args.image, result).save(args.out)
            print(f"drawn: {args.out}")
        return 0
    results = model.predict_many(
        items, batch_size=args.batch_size, progress=not args.no_progress, threshold=args.threshold
    )
    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        for result in results:
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
    finally:
        if args.output:
            out.close()
            print(f"{len(results)} predictions written to {args.output}", file=sys.stderr)
    return 0


def cmd_data_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import shapes

    if args.out.exists() and not args.force:
        print(f"{args.out} exists; pass --force to regenerate it")
        return 0
    names = ("n_train", "n_val", "image_size", "max_shapes", "shape_size", "seed", "extra_tasks")
    given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    summary = shapes.generate(args.out, **given)
    print(f"wrote the shapes demo set to {args.out}: {summary}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from pipeline.init_recipe import init_recipe

    out, found = init_recipe(args.paths, args.out, family=args.family, model_id=args.model, force=args.force)
    for s in found:
        splits = ", ".join(s.splits)
        print(f"{s.name}: {s.format} ({s.note}); splits: {splits}")
    print(f"wrote {out}: check it with `uvft check {out}`, then `uvft finetune {out}`")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from pipeline import check
    from pipeline.errors import RecipeError
    from pipeline.recipe import dump, load_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides)
    except RecipeError as e:
        print(check.Finding(check.PROBLEM, "recipe", str(e)).line())
        print(check.verdict([check.Finding(check.PROBLEM, "recipe", str(e))]))
        return 2
    if args.print or args.verbose:
        print(dump(recipe), end="")
    sources = ", ".join(s.name for s in recipe.data.sources)
    print(
        check.Finding(
            check.OK, "recipe", f"recipe {args.recipe}: valid ({recipe.model.family}; {sources})"
        ).line()
    )
    findings = check.check(recipe)
    for finding in findings:
        print(finding.line())
    print(check.verdict(findings))
    return 2 if any(f.level == check.PROBLEM for f in findings) else 0


class _QuietLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(QUIET_LOGS.get(record.name, ()) or "\0")


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False) -> Iterator[None]:
    """Within: the QUIET_WARNINGS and QUIET_LOGS notices are not shown (all of them with `verbose`).
    uvft's own warnings and every other library warning still are."""
    if verbose:
        yield
        return
    quiet = _QuietLogs()
    loggers = [logging.getLogger(name) for name in QUIET_LOGS]  # transformers logs to these by name
    with warnings.catch_warnings():
        for category, module, message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        for logger in loggers:
            logger.addFilter(quiet)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(quiet)


def _open_bars() -> list[Any]:
    """The progress bars of this process still drawn (none when tqdm was never imported)."""
    std = sys.modules.get("tqdm.std")
    return sorted(getattr(std.tqdm, "_instances", ()), key=lambda bar: -abs(bar.pos)) if std else []


def end_progress_lines() -> None:
    """Close the bars still drawn, inner ones first: an error raised inside a loop leaves its bar
    open with the cursor at the end of its line, and what is printed next would be glued to it.
    A closed bar shows where it stopped and ends its line."""
    for bar in _open_bars():
        bar.close()


class _LineHandler(logging.StreamHandler):
    """Log lines printed above the progress bars being drawn (tqdm.write), not glued to them."""

    def emit(self, record: logging.LogRecord) -> None:
        if not _open_bars():
            super().emit(record)
            return
        try:
            sys.modules["tqdm.std"].tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def _error(text: str) -> None:
    end_progress_lines()
    print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # overrides may come after options too (`uvft finetune R --resume auto train.steps=10`)
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    # Our own messages at INFO; other libraries only when they warn.
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", handlers=[_LineHandler()]
    )
    logging.getLogger("pipeline").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        with quiet_libraries(args.verbose):
            return args.func(args)
    except TrainingStopped as e:  # a clean stop on a signal, checkpoint saved: not an error
        _error(str(e))
        return e.exit_code
    except UvftError as e:
        _error(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as e:
        if full := disk_full(e):  # wherever it struck (a checkpoint, a cache, a log): one line
            where = f" writing {full.filename}" if full.filename else ""
            _error(f"error: {full.strerror}{where}: free some space and run it again")
            return 2
        end_progress_lines()  # a bug: its traceback on a line of its own too
        raise


if __name__ == "__main__":
    sys.exit(main())
