"""Publishing: the model card, the folder `uvft push` uploads, the merged export, and the upload.

`stage` lays out, in `<run>/push/<repo name>/`, exactly what goes to the hub:

- the weights: the LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`, with
  `base_model_name_or_path` set to a hub id), or with `merged` the full merged model
  (`config.json`, `model*.safetensors`) that `from_pretrained` loads without peft;
- the processor and tokenizer files, the pinned `generation_config.json` (greedy,
  `no_repeat_ngram_size=0`), `uvft.json` (family, prompts, location tokens: pipeline.models.spec);
- `recipe.yaml` (the resolved recipe), `metrics.json` (`{"split", "fine_tuned", "base"}` from
  `uvft eval` and `uvft eval --base`), and the eval report (`eval/report.md`, its plots);
- `README.md`: the model card uvft writes (never peft's template), YAML metadata built with
  huggingface_hub's `ModelCardData` (a `model-index` with one result per task and metric, values
  equal to metrics.json) and a body with the prompts, mixture, hyperparameters, metrics, a
  transformers + peft snippet, limitations and how to reproduce.

The token comes from `HF_TOKEN` or the cached login (`hf auth login`) and is only ever handed
to huggingface_hub: it is never printed, logged or written, and errors are scrubbed of it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import folders, formats, loader, models, runfolder, tasks
from pipeline.errors import UvftError
from pipeline.evaluation.run import sample_notes
from pipeline.evaluation.score import metric_at, same_records
from pipeline.models.spec import ModelSpec, weights_folder
from pipeline.models.vqvae import MASK_VAE_FILE

logger = logging.getLogger(__name__)

# published from a weights folder besides the weights: what generation needs
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "processor_config.json",
    "preprocessor_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
REPORT_FILES = ("report.md", "loss.png", "val_loss.png", "val_metrics.png")


@dataclass
class Staged:
    """A folder ready to upload, and what it is."""

    folder: Path
    repo_id: str
    card: Any  # huggingface_hub.ModelCard
    base: Staged | None = None  # the base model, when it is pushed too (--base-repo-id)
    files: list[tuple[str, int]] = field(default_factory=list)  # (path in repo, bytes)


# ---------------------------------------------------------------------------- the run's evidence


def run_dir_of(folder: Path) -> Path:
    """The run folder a weights folder belongs to (`<run>`, `<run>/best`, `<run>/model`)."""
    folder = Path(folder)
    if (folder / "recipe.yaml").is_file() or not (folder.parent / "recipe.yaml").is_file():
        return folder
    return folder.parent


def run_record(run: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(recipe.yaml, summary.json) of a run folder as data, None where a file is absent."""
    return runfolder.read_recipe(run), runfolder.read_summary(run)


def eval_metrics(folder: Path, split: str = "val") -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(fine-tuned, base) metrics.json of `uvft eval` / `uvft eval --base` on `split`, or None."""
    from pipeline.evaluation.run import evidence_dir

    tuned_file = _eval_dir(folder, split) / "metrics.json"
    base_file = evidence_dir(run_dir_of(Path(folder)), None, split) / "metrics.json"
    tuned = json.loads(tuned_file.read_text()) if tuned_file.is_file() else None
    base = json.loads(base_file.read_text()) if base_file.is_file() else None
    return tuned, base


@dataclass
class RunEvidence:
    """What a model card reports of a run: its resolved recipe and summary.json, and the fine-tuned
    and base metrics.json of `split` (None where a file is absent)."""

    recipe: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    base_metrics: dict[str, Any] | None = None
    split: str = "val"


def run_evidence(source: Path, split: str = "val") -> RunEvidence:
    """The RunEvidence of a run folder, or of the run a best/ or checkpoint folder belongs to."""
    recipe, summary = run_record(run_dir_of(Path(source)))
    metrics, base_metrics = eval_metrics(Path(source), split)
    if not same_records(metrics, base_metrics):  # a base scored on other records is not compared
        base_metrics = None
    return RunEvidence(recipe, summary, metrics, base_metrics, split)


def evidence_mismatch(metrics: dict[str, Any] | None, digest: str | None) -> str | None:
    """Why `metrics` (a metrics.json) does not belong to the weights of sha256 `digest`; None when
    it does, or when there are no metrics (the card then says the model was not evaluated)."""
    if metrics is None:
        return None
    named = (metrics.get("weights") or {}).get("sha256")
    if named is None:
        return "names no weights (it was written before uvft recorded them), so it cannot be tied to these"
    if named != digest:
        return f"was computed from other weights (sha256 {named[:12]}…) than these ({(digest or '?')[:12]}…)"
    return None


def metric_value(metrics: dict[str, Any], task: str, key: str) -> float | None:
    return metric_at(metrics.get(task), key)


# ---------------------------------------------------------------------------- the model card


@dataclass
class _Sources:
    names: dict[str, str]  # source -> dataset name (data card name, else the source name)
    hub_ids: dict[str, str]  # source -> dataset id for the card's `datasets`
    licenses: dict[str, str]  # source -> the card's license text


def _sources(recipe: dict[str, Any] | None) -> _Sources:
    from pipeline.data.cards import load_card

    out = _Sources({}, {}, {})
    for s in (recipe or {}).get("data", {}).get("sources", []):
        name = s["name"]
        out.names[name] = out.hub_ids[name] = name
        if s.get("card") and Path(s["card"]).is_file():
            card = load_card(Path(s["card"]))
            out.names[name] = out.hub_ids[name] = card.name
            out.licenses[name] = card.license
    return out


def _license(texts: list[str]) -> tuple[str | None, str | None]:
    """(license id, license_name) for the card: the data cards' SPDX-like first word, lowercased;
    `other` (named `mixed`) when they differ; None when no card says."""
    ids = sorted({t.split()[0].lower().rstrip(";,") for t in texts if t.strip()})
    if not ids:
        return None, None
    return (ids[0], None) if len(ids) == 1 else ("other", "mixed")


def eval_results(spec: ModelSpec, metrics: dict[str, Any], split: str, sources: _Sources) -> list[Any]:
    """One huggingface_hub EvalResult per task and metric, values exactly those of metrics.json."""
    from huggingface_hub import EvalResult

    results = []
    shown = [t for t in tasks.all_tasks() if t.NAME in metrics and t.NAME in spec.tasks]

    def dataset_type(task: str) -> str:
        return " + ".join(dict.fromkeys(sources.hub_ids.get(s, s) for s in spec.tasks[task].sources)) or task

    # The hub groups a model-index's results by task type and dataset, and keeps one task name per
    # group: two tasks of one type on one dataset (captions and OCR of the same images) would read
    # back as one. The dataset's config (the task) keeps such tasks apart.
    groups = Counter((t.HUB_TASK[0], dataset_type(t.NAME)) for t in shown)
    for t in shown:
        task, (task_type, task_name) = t.NAME, t.HUB_TASK
        srcs = spec.tasks[task].sources
        dataset = " + ".join(dict.fromkeys(sources.names.get(s, s) for s in srcs)) or task
        shared = groups[(task_type, dataset_type(task))] > 1
        for key, metric_type, metric_name in t.CARD_METRICS:
            value = metric_value(metrics, task, key)
            if value is None:
                continue
            results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=dataset_type(task),
                    dataset_name=dataset,
                    dataset_config=task if shared else None,
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=value,
                )
            )
    return results


def build_card(
    spec: ModelSpec, evidence: RunEvidence, *, repo_id: str, base_model: str | None, merged: bool
) -> Any:
    """The model card (huggingface_hub.ModelCard): metadata + body, see the module doc."""
    from huggingface_hub import ModelCard, ModelCardData

    metrics, split = evidence.metrics, evidence.split
    sources = _sources(evidence.recipe)
    license_id, license_name = _license(list(sources.licenses.values()))
    datasets = sorted(set(sources.hub_ids.values())) or None
    adapter = spec.method == "lora" and not merged
    data = ModelCardData(
        base_model=base_model,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="image-text-to-text",
        tags=["uvft", *(["lora"] if adapter else []), spec.family, "multitask", *spec.tasks],
        datasets=datasets,
        license=license_id,
        license_name=license_name,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results(spec, metrics, split, sources) or None if metrics else None,
    )
    body = _card_body(spec, evidence, sources, repo_id=repo_id, base_model=base_model, adapter=adapter)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _first_task(spec: ModelSpec) -> str:
    """The task the card's examples run: detection when the model has it, else its first."""
    return tasks.DETECTION if tasks.DETECTION in spec.tasks else next(iter(spec.tasks))


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    def cell(v: str) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _code(text: str) -> str:
    text = text if len(text) <= 160 else text[:157] + "..."
    return "`" + text.replace("`", "'") + "`" if text else "(empty)"


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def _card_body(
    spec: ModelSpec,
    evidence: RunEvidence,
    sources: _Sources,
    *,
    repo_id: str,
    base_model: str | None,
    adapter: bool,
) -> str:
    recipe, summary = evidence.recipe, evidence.summary
    loc = spec.location_tokens
    name = repo_id.split("/")[-1]
    family = models.get(spec.family).DISPLAY_NAME
    base_link = f"[`{base_model}`](https://huggingface.co/{base_model})" if base_model else None
    if adapter:
        what = f"A LoRA adapter for {base_link or 'a local ' + family + ' base model'}"
    elif spec.method == "full":
        what = f"A full fine-tune of {base_link or 'a local ' + family + ' model'}"
    elif base_link:
        what = f"{base_link} with a LoRA adapter merged in"
    else:
        what = f"A {family} model (a LoRA adapter merged into a base model that is not on the hub)"
    first_task = _first_task(spec)
    parts = [
        f"# {name}",
        f"{what}, fine-tuned with uvft on {len(spec.tasks)} vision tasks at once "
        f"({', '.join(spec.tasks)}). One model answers every task; the prompt picks the task. "
        "Outputs are text in the family's format: boxes are location tokens.",
        "## Tasks and prompts",
        "Write the prompt exactly as below (PaliGemma: after the `<image>` token; the processor adds "
        "`<bos>` and the newline). The example targets are training targets.",
    ]
    rows = []
    for task, t in spec.tasks.items():
        note, vocabulary = "", tasks.get(task).VOCABULARY
        if vocabulary and t.classes:
            note = f"{vocabulary}: {', '.join(t.classes[:12])}{' …' if len(t.classes) > 12 else ''}"
        rows.append([task, _code(t.prompt), _code(t.example_target), note])
    parts.append(_md_table(["task", "prompt", "example target", "vocabulary"], rows))
    parts.append(
        f"**Location tokens** ({spec.family}): `{loc['tokens']}`, {loc['bins']} bins per axis, four per "
        f"box in the order {loc['order']}. A coordinate v in an image of side S is bin "
        f"floor(v / S × {loc['bins']}) (clamped to the last bin) and decodes to the bin centre "
        f"(b + 0.5) × S / {loc['bins']}."
    )
    parts.append("## Evaluation")
    parts.append(_metrics_section(evidence.metrics, evidence.base_metrics, evidence.split))
    parts.append("## Training")
    parts.append(_mixture_section(summary, recipe))
    parts.append(_hyper_section(recipe, summary, spec))
    parts.append("## Use")
    parts.append(
        "With transformers and peft alone (the generation config pins greedy decoding and "
        "`no_repeat_ngram_size=0`: Florence-2's default of 3 corrupts repeated location tokens):"
        if adapter
        else "With transformers alone (the generation config pins greedy decoding and "
        "`no_repeat_ngram_size=0`: Florence-2's default of 3 corrupts repeated location tokens):"
    )
    parts.append(
        "```python\n" + card_snippet(spec, repo_id=repo_id, base_model=base_model, adapter=adapter) + "```"
    )
    parts.append(
        "With uvft, which renders the prompts and parses the outputs (boxes in pixels, with scores):\n\n"
        "```python\nfrom pipeline import load_model\n\n"
        f'model = load_model("{repo_id}")\n'
        f'print(model.predict("image.jpg", task="{first_task}"))\n```\n\n'
        f"or `uvft predict --model {repo_id} --image image.jpg --task {first_task}`."
    )
    parts.append("## Limitations")
    parts.append(_limitations(spec, base_model, sources))
    parts.append("## Reproduce")
    recipe_name = (recipe or {}).get("name", "RECIPE")
    parts.append(
        "`recipe.yaml` in this repository is the resolved recipe of the run:\n\n"
        "```bash\nuvft finetune recipe.yaml --resume auto\n"
        "uvft eval recipe.yaml --base && uvft eval recipe.yaml\n"
        f"uvft push runs/{recipe_name} --repo-id {repo_id}{'' if adapter else ' --merged'}\n```\n\n"
        "Data: lay each source out as its data card says (`data_cards/` in uvft) and pass `data.root=…`."
    )
    return "\n\n".join(parts) + "\n"


def _metrics_section(metrics, base_metrics, split: str) -> str:
    if not metrics:
        return "Not evaluated: run `uvft eval` (and `uvft eval --base`) before pushing."
    rows = []
    for t in tasks.all_tasks():
        task = t.NAME
        for key, _, metric_name in t.CARD_METRICS:
            value = metric_value(metrics, task, key)
            if value is None:
                continue
            base = metric_value(base_metrics, task, key) if base_metrics else None
            count = (metrics.get("counts") or {}).get(task, "")
            rows.append([task, metric_name, _fmt(base) if base_metrics else "", _fmt(value), str(count)])
    text = f"On the `{split}` split, greedy decoding"
    if base_metrics:
        text += " (*base*: the base model before this fine-tune, the retention check)"
    text += ":\n\n" + _md_table(["task", "metric", "base", "fine-tuned", "records"], rows)
    if digest := (metrics.get("weights") or {}).get("sha256"):
        text += f"\n\nThese numbers were computed from the published weights (sha256 `{digest}`)."
    for note in sample_notes(metrics):  # a limited evaluation, published with --allow-limited
        text += f"\n\n**Evaluated on {note}.** These numbers estimate the split's; they are not its."
    return text


def _mixture_section(summary, recipe) -> str:
    mixture = (summary or {}).get("mixture")
    strategy = (recipe or {}).get("mixture", {})
    head = f"Task-balanced sampling: `{strategy.get('strategy', '?')}`"
    if strategy.get("strategy") == "temperature":
        head += f" (T = {strategy.get('temperature')})"
    if not mixture:
        return head + "; the realised shares were not recorded by this run."
    draws = mixture["draws"]
    total = sum(draws.values()) or 1
    rows = [
        [s, f"{mixture['planned'].get(s, 0.0):.1%}", f"{draws.get(s, 0) / total:.1%}", str(draws.get(s, 0))]
        for s in dict.fromkeys([*mixture["planned"], *draws])
    ]
    return head + ", planned vs realised:\n\n" + _md_table(["source", "planned", "realised", "draws"], rows)


def _hyper_section(recipe, summary, spec: ModelSpec) -> str:
    r = recipe or {}
    a, t = r.get("adapter", {}), r.get("train", {})
    rows = [["method", str(a.get("method", spec.method))]]
    if a.get("method", spec.method) == "lora":
        rows += [
            [
                "LoRA preset / r / alpha / dropout",
                " / ".join(str(a.get(k)) for k in ("preset", "r", "alpha", "dropout")),
            ],
            ["modules_to_save", str(a.get("modules_to_save"))],
        ]
    rows += [
        ["vision tower frozen", str(a.get("freeze_vision"))],
        ["steps × batch × grad_accum", f"{t.get('steps')} × {t.get('batch_size')} × {t.get('grad_accum')}"],
        ["lr / schedule / warmup", f"{t.get('lr')} / {t.get('schedule')} / {t.get('warmup_steps')}"],
        ["max_grad_norm / mixed precision", f"{t.get('max_grad_norm')} / {t.get('mixed_precision')}"],
        ["seed", str(t.get("seed"))],
    ]
    if summary:
        rows += [
            [
                "trainable / total parameters",
                f"{summary['trainable_params']:,} / {summary['total_params']:,}",
            ],
            ["samples seen", f"{summary['samples']:,}"],
        ]
    return "Hyperparameters (all of them are in `recipe.yaml`):\n\n" + _md_table(["setting", "value"], rows)


def _limitations(spec: ModelSpec, base_model: str | None, sources: _Sources) -> str:
    items = [
        "It writes the tasks above in the prompts above; other prompts are outside what it was "
        "fine-tuned on.",
        "Boxes are quantised to the location-token grid (half a bin of error at best).",
    ]
    if tasks.DETECTION in spec.tasks and formats.get(spec.family).DETECTION_LISTS_CATEGORIES:
        family = models.get(spec.family).DISPLAY_NAME
        items.append(
            f"{family}'s detection prompt lists the categories to look for (`detect a ; b`); the "
            "training vocabulary is in `uvft.json`. Other categories are open-vocabulary guesses."
        )
    if not base_model:
        items.append("Its base model is not on the hub: this repository holds the full merged model.")
    if "shapes" in sources.names.values():
        items.append(
            "Trained on uvft's synthetic *shapes* demo set with a tiny model: a demonstration of the "
            "pipeline, not a useful vision model."
        )
    if sources.licenses:
        by_card = {sources.names[s]: lic for s, lic in sources.licenses.items()}
        items.append("Data licenses: " + "; ".join(f"{n}: {lic}" for n, lic in by_card.items()) + ".")
    return "\n".join(f"- {i}" for i in items)


def card_snippet(spec: ModelSpec, *, repo_id: str, base_model: str | None, adapter: bool) -> str:
    """Python that loads the published model with transformers (+ peft) and runs one task."""
    family = models.get(spec.family)
    cls = family.MODEL_CLASS
    task = _first_task(spec)
    prompt = spec.prompt(task, **tasks.get(task).EXAMPLE_INPUTS)
    decoder_only = family.DECODER_ONLY  # the prompt names the image, and generate returns it too
    new = "new = out[0]"
    if decoder_only:
        new = "new = out[0, inputs['input_ids'].shape[1]:]  # the generated tokens, after the prompt"
    lines = [
        "import torch",
        *(["from peft import PeftModel"] if adapter else []),
        "from PIL import Image, ImageOps",
        f"from transformers import AutoProcessor, GenerationConfig, {cls}",
        "",
        f'repo = "{repo_id}"',
    ]
    if adapter:
        lines += [
            f'model = {cls}.from_pretrained("{base_model}")',
            "model = PeftModel.from_pretrained(model, repo).eval()",
        ]
    else:
        lines.append(f"model = {cls}.from_pretrained(repo).eval()")
    lines += [
        "processor = AutoProcessor.from_pretrained(repo)",
        "generation_config = GenerationConfig.from_pretrained(repo)",
        "",
        'image = ImageOps.exif_transpose(Image.open("image.jpg")).convert("RGB")',
        f"prompt = {json.dumps((family.IMAGE_TOKEN if decoder_only else '') + prompt, ensure_ascii=False)}"
        f"  # task: {task}",
        'inputs = processor(text=prompt, images=image, return_tensors="pt")',
        "with torch.no_grad():",
        "    out = model.generate(**inputs, generation_config=generation_config)",
        new,
        "text = processor.decode(new, skip_special_tokens=False)",
        'for marker in ("<pad>", "<eos>", "<bos>", "<s>", "</s>"):',
        '    text = text.replace(marker, "")',
        "print(text.strip())",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- staging


def stage(
    source: Path,
    repo_id: str,
    *,
    merged: bool = False,
    base_repo_id: str | None = None,
    split: str = "val",
    out: Path | None = None,
    allow_limited: bool = False,
) -> Staged:
    """Lay out what `uvft push` uploads (see the module doc) and validate the card. An evaluation of a
    sample (`uvft eval --limit`) is refused unless `allow_limited`: the card then says so."""
    source = Path(source)
    _check_repo_id(repo_id, "--repo-id")
    if base_repo_id is not None:
        _check_repo_id(base_repo_id, "--base-repo-id")
        if merged:
            raise UvftError("--base-repo-id points an adapter at its base; a --merged push has no adapter")
    run = run_dir_of(source)
    weights = weights_folder(source)
    spec = loader.spec_for(weights)
    is_adapter = (weights / "adapter_config.json").is_file()
    if not is_adapter and not (weights / "config.json").is_file():
        raise UvftError(f"{source} holds no adapter (adapter_config.json) and no model (config.json)")
    base_name = loader.adapter_base(weights, spec) if is_adapter else spec.base_model
    base_is_hub = bool(loader.HUB_ID.match(base_name or "")) and not Path(base_name).expanduser().is_dir()
    if is_adapter and not merged and not base_is_hub and base_repo_id is None:
        raise UvftError(
            f"the adapter's base model is a local folder ({base_name}), which nobody else can load: "
            "pass --merged to push the merged full model, or --base-repo-id NAME to push the base "
            "there too and point the adapter at it"
        )
    evidence = run_evidence(source, split)
    metrics = evidence.metrics
    if mismatch := evidence_mismatch(metrics, loader.weights_digest(weights)):
        raise UvftError(
            f"the {split} evaluation of {source} {mismatch}: the card would publish another model's "
            "numbers. Run `uvft eval` on it again (or pass --split naming an evaluation of these weights)"
        )
    limited = sample_notes(metrics or {})
    if limited and not allow_limited:
        raise UvftError(
            f"the {split} evaluation of {source} is {limited[0]}: the card would publish a sample's "
            "numbers as the split's. Run `uvft eval` (and `uvft eval --base`) without --limit, or pass "
            "--allow-limited to publish them as a sample (the card says so)"
        )
    folder = out or run / "push" / repo_id.replace("/", "--")
    recipe_file = run / "recipe.yaml"
    with folders.writing(folder, "uvft push", protect={source, run}, owned=_written_by_export) as tmp:
        base_staged = None
        if base_repo_id is not None and not merged:
            base_staged = _stage_base(loader.resolve_base(base_name, weights), base_repo_id, repo_id, folder)
            published_base: str | None = base_repo_id
        else:
            published_base = base_name if base_is_hub else None
        if merged and is_adapter:
            _write_merged(source, tmp)
            spec = ModelSpec(**{**spec.__dict__, "method": "merged", "base_model": published_base or ""})
        else:
            names = (*ADAPTER_FILES, *PROCESSOR_FILES) if is_adapter else _model_files(weights)
            for name in (*names, MASK_VAE_FILE):  # the mask codec, when the model writes masks as codes
                if (weights / name).is_file():
                    shutil.copy2(weights / name, tmp / name)
            if is_adapter:
                config = json.loads((tmp / "adapter_config.json").read_text())
                config["base_model_name_or_path"] = published_base
                (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            spec = ModelSpec(**{**spec.__dict__, "base_model": published_base or ""})
        spec.save(tmp)
        if recipe_file.is_file():
            shutil.copy2(recipe_file, tmp / "recipe.yaml")
        _stage_evidence(tmp, source, evidence)
        card = build_card(
            spec, evidence, repo_id=repo_id, base_model=published_base, merged=merged or not is_adapter
        )
        validate_card(card, metrics, split)
        card.save(tmp / "README.md")
        _refuse_pickles(tmp)
    return Staged(folder=folder, repo_id=repo_id, card=card, base=base_staged, files=list_files(folder))


def _stage_evidence(tmp: Path, source: Path, evidence: RunEvidence) -> None:
    """metrics.json (fine-tuned and base) and the evaluation report, as `uvft eval` wrote them."""
    if evidence.metrics is None:
        logger.warning(
            "%s has no %s evaluation: the card will say so (run `uvft eval` first)", source, evidence.split
        )
        return
    payload = {"split": evidence.split, "fine_tuned": evidence.metrics, "base": evidence.base_metrics}
    (tmp / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
    report_dir = _eval_dir(source, evidence.split)
    for name in REPORT_FILES:
        if (report_dir / name).is_file():
            (tmp / "eval").mkdir(exist_ok=True)
            shutil.copy2(report_dir / name, tmp / "eval" / name)


def _eval_dir(source: Path, split: str) -> Path:
    """Where `uvft eval` wrote a weights folder's evidence (<run>/model is the run's own model)."""
    from pipeline.evaluation.run import evidence_dir

    source, run = Path(source), run_dir_of(Path(source))
    return evidence_dir(run, run if source.resolve() == (run / "model").resolve() else source, split)


def _model_files(weights: Path) -> list[str]:
    names = [p.name for p in sorted(weights.iterdir()) if p.is_file()]
    keep = [
        n for n in names if n == "config.json" or re.fullmatch(r"model.*\.safetensors(\.index\.json)?", n)
    ]
    return keep + [n for n in PROCESSOR_FILES if n in names]


def _stage_base(base: str, base_repo_id: str, repo_id: str, folder: Path) -> Staged:
    """The base model's folder as pushed to --base-repo-id, with a short card pointing back."""
    from huggingface_hub import ModelCard, ModelCardData

    out = folder.with_name(folder.name + "--base")
    owned = lambda p: (p / "README.md").is_file()  # noqa: E731  (written before the marker)
    with folders.writing(out, "uvft push", protect={Path(base)}, owned=owned) as tmp:
        for name in _model_files(Path(base)):
            shutil.copy2(Path(base) / name, tmp / name)
        data = ModelCardData(library_name="transformers", pipeline_tag="image-text-to-text", tags=["uvft"])
        card = ModelCard(
            f"---\n{data.to_yaml()}\n---\n\n# {base_repo_id.split('/')[-1]}\n\nThe base model of "
            f"[{repo_id}](https://huggingface.co/{repo_id}), published by `uvft push --base-repo-id` "
            "because it was a local folder.\n"
        )
        card.save(tmp / "README.md")
        _refuse_pickles(tmp)
    return Staged(folder=out, repo_id=base_repo_id, card=card, files=list_files(out))


def _refuse_pickles(folder: Path) -> None:
    bad = [p.name for p in folder.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    if bad:
        raise UvftError(f"{folder}: refusing to publish pickled weights ({', '.join(bad)}); safetensors only")


def _check_repo_id(repo_id: str, option: str) -> None:
    if not loader.HUB_ID.match(repo_id):
        raise UvftError(f"{option} {repo_id!r}: a hub repo id is namespace/name (e.g. me/demo)")


def list_files(folder: Path) -> list[tuple[str, int]]:
    return [
        (p.relative_to(folder).as_posix(), p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != folders.MARKER
    ]


def validate_card(card: Any, metrics: dict[str, Any] | None, split: str) -> None:
    """Parse the card's metadata back as the hub will, and check the model-index against metrics.json."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    try:
        reloaded = ModelCard(str(card))
        meta = reloaded.data.to_dict()
    except Exception as e:  # any failure here is a bug in the card we wrote
        raise UvftError(f"the model card's metadata does not parse: {e}") from None
    for key in ("library_name", "pipeline_tag", "tags"):
        if not meta.get(key):
            raise UvftError(f"the model card's metadata lacks {key!r}")
    if not metrics:
        return
    _, results = model_index_to_eval_results(meta["model-index"])
    for r in results:
        # caption and ocr share a task type: the name tells them apart
        t = next(t for t in tasks.all_tasks() if (r.task_type, r.task_name) == t.HUB_TASK)
        task, key = t.NAME, next(m.key for m in t.CARD_METRICS if m.name == r.metric_name)
        if r.metric_value != metric_value(metrics, task, key) or r.dataset_split != split:
            raise UvftError(
                f"model card: {task} {r.metric_name} = {r.metric_value} differs from metrics.json"
            )


# ---------------------------------------------------------------------------- merged export


def export_merged(
    source: Path, out: Path, *, card: bool = True, repo_id: str | None = None, overwrite: bool = False
) -> Path:
    """Merge the adapter into its base (`merge_and_unload`) and save a full model folder that
    `from_pretrained` loads without peft: safetensors, processor, pinned generation config,
    uvft.json, and a model card. A full fine-tune's model is copied as it is. `out` is written
    whole and swapped in; a folder uvft did not write is replaced only with `overwrite`, and
    never one that holds the run, the current directory or the home folder."""
    out, source = Path(out), Path(source)
    protect = {source, run_dir_of(source)}
    with folders.writing(
        out, "uvft export", overwrite=overwrite, protect=protect, owned=_written_by_export
    ) as tmp:
        m = _write_merged(source, tmp)
        spec = ModelSpec(**{**m.spec.__dict__, "method": "merged" if m.is_adapter else m.spec.method})
        spec.save(tmp)
        if card:
            evidence = run_evidence(source)
            if mismatch := evidence_mismatch(evidence.metrics, m.digest):
                logger.warning("the card leaves out the %s evaluation, which %s", evidence.split, mismatch)
                evidence = RunEvidence(evidence.recipe, evidence.summary, None, None, evidence.split)
            base = spec.base_model if loader.HUB_ID.match(spec.base_model or "") else None
            model_card = build_card(
                spec, evidence, repo_id=repo_id or f"local/{out.name}", base_model=base, merged=True
            )
            validate_card(model_card, evidence.metrics, evidence.split)
            model_card.save(tmp / "README.md")
    return out


def _write_merged(source: Path, out: Path) -> loader.Loaded:
    """The merged model's weights, processor and pinned generation config, saved into `out`."""
    from pipeline.models.common import save_base

    m = loader.load(source, device="cpu")
    model = m.model.merge_and_unload() if m.is_adapter else m.model
    save_base(model, m.processor, out)
    m.generation_config.save_pretrained(out)
    if m.folder is not None and (m.folder / MASK_VAE_FILE).is_file():  # the codec its masks need
        shutil.copy2(m.folder / MASK_VAE_FILE, out / MASK_VAE_FILE)
    return m


def _written_by_export(folder: Path) -> bool:
    # exports and staging folders written before the marker existed: a model uvft described
    return (folder / "uvft.json").is_file()


# ---------------------------------------------------------------------------- upload


@dataclass
class PushResult:
    staged: Staged
    commit_url: str | None = None
    pr_url: str | None = None
    base_commit_url: str | None = None
    private: bool | None = None  # the repo's visibility as the hub reports it
    unchanged: bool = False  # every file was already there: no commit was made


def push(
    source: Path,
    repo_id: str,
    *,
    merged: bool = False,
    base_repo_id: str | None = None,
    public: bool = False,
    create_pr: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    split: str = "val",
    token: str | None = None,
    allow_limited: bool = False,
) -> PushResult:
    """Stage and upload a run's model (see the module doc). Private unless `public`."""
    from huggingface_hub import HfApi, get_token

    if not dry_run:  # before the (possibly long) merge and staging
        token = token or get_token()
        if not token:
            raise UvftError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)")
    staged = stage(
        source, repo_id, merged=merged, base_repo_id=base_repo_id, split=split, allow_limited=allow_limited
    )
    if dry_run:
        return PushResult(staged)
    api = HfApi(token=token)
    result = PushResult(staged)
    message = commit_message or f"uvft: upload {'merged model' if merged else 'adapter'} from {source}"
    if staged.base is not None:
        with loader.hub_errors(staged.base.repo_id, token=token):
            api.create_repo(staged.base.repo_id, private=not public, exist_ok=True)
            info = api.upload_folder(
                repo_id=staged.base.repo_id,
                folder_path=staged.base.folder,
                ignore_patterns=[folders.MARKER],
                commit_message=f"uvft: base model of {repo_id}",
            )
            result.base_commit_url = info.commit_url
    with loader.hub_errors(repo_id, token=token):
        api.create_repo(repo_id, private=not public, exist_ok=True)
        if revision and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        before = api.repo_info(repo_id, revision=revision)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=staged.folder,
            ignore_patterns=[folders.MARKER],
            commit_message=message,
            revision=revision,
            create_pr=create_pr,
        )
    result.commit_url, result.pr_url = info.commit_url, info.pr_url
    result.private = bool(before.private)
    # huggingface_hub skips a commit (and a PR) when no file changed; say so rather than claim one
    result.unchanged = info.pr_url is None and info.oid == before.sha
    return result
