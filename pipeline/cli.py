"""`uvft` command line: parse arguments, load the recipe, call one function."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline import __version__
from pipeline.errors import UvftError

DEFAULT_RECIPE = "recipes/demo.yaml"


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
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", help="read a recipe's sources and write its records (cached)")
    _add_recipe_args(p)
    p.add_argument("--export-jsonl", type=Path, metavar="PATH", help="also write every record as JSON lines")
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
    p.add_argument("--limit", type=int, metavar="N", help="at most N records per task")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("data", help="data utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    d = data_sub.add_parser("demo", help="generate the synthetic shapes demo set in its real on-disk formats")
    d.add_argument(
        "--out", type=Path, default=Path("data/shapes"), help="output folder (default: data/shapes)"
    )
    # unset options take the generator's own defaults (pipeline/data/shapes.py: generate)
    d.add_argument("--n-train", type=int)
    d.add_argument("--n-val", type=int)
    d.add_argument("--image-size", type=int)
    d.add_argument("--max-shapes", type=int)
    d.add_argument(
        "--shape-size", type=float, nargs=2, metavar=("MIN", "MAX"),
        help="a shape's side as fractions of the image side",
    )  # fmt: skip
    d.add_argument("--seed", type=int)
    d.add_argument("--force", action="store_true", help="replace the folder if it exists")
    d.set_defaults(func=cmd_data_demo)

    p = sub.add_parser("check", help="validate a recipe (schema and source parameters) and print it resolved")
    _add_recipe_args(p)
    p.set_defaults(func=cmd_check)
    return parser


def cmd_build(args: argparse.Namespace) -> int:
    from pipeline.data.build import build, print_stats
    from pipeline.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    result = build(recipe, export_jsonl=args.export_jsonl, force=args.force, progress=not args.no_progress)
    print_stats(result)
    if args.export_jsonl:
        print(f"exported: {args.export_jsonl}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from pipeline.recipe import load_recipe
    from pipeline.train.loop import print_summary, train

    recipe = load_recipe(args.recipe, args.overrides)
    summary = train(
        recipe, resume=args.resume, progress=not args.no_progress, cpu=args.cpu, overwrite=args.overwrite
    )
    print_summary(summary)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pipeline.evaluation.run import evaluate_run, print_metrics
    from pipeline.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    adapter = None if args.base else (args.adapter or recipe.run_dir)
    out, metrics = evaluate_run(
        recipe, adapter=adapter, split=args.split, limit=args.limit, batch_size=args.batch_size,
        progress=not args.no_progress,
    )  # fmt: skip
    base_file = recipe.run_dir / "eval-base" / args.split / "metrics.json"
    base = json.loads(base_file.read_text()) if adapter is not None and base_file.is_file() else None
    print_metrics(metrics, base)
    print(f"generations, metrics and report: {out}")
    return 0


def cmd_data_demo(args: argparse.Namespace) -> int:
    import shutil

    from pipeline.data import shapes

    if args.out.exists():
        if not args.force:
            print(f"{args.out} exists; pass --force to regenerate it")
            return 0
        shutil.rmtree(args.out)
    names = ("n_train", "n_val", "image_size", "max_shapes", "shape_size", "seed")
    given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    summary = shapes.generate(args.out, **given)
    print(f"wrote the shapes demo set to {args.out}: {summary}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from pipeline.recipe import dump, load_recipe

    print(dump(load_recipe(args.recipe, args.overrides)), end="")
    return 0


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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except UvftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
