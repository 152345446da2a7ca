"""The one way a trained model is loaded: `load(source)` -> `Loaded` (model, processor, spec, kind),
for `uvft eval`, `uvft predict` / `load_model`, `uvft export` and `uvft push`.

What `load` accepts:

- a run folder of a LoRA run (`adapter_config.json`; the base named in `uvft.json`, else in
  `adapter_config.json`, unless the caller names it), or `<run>/best`;
- a run folder of a full fine-tune (`adapter.method: full` keeps the model in `<run>/model`);
- a merged export (`uvft export RUN --merged OUT`: `config.json` + safetensors, no peft), or any
  model folder;
- a hub id (`me/demo`, with `revision`): downloaded with `snapshot_download`, then as above. Only
  a `namespace/name` whose namespace is not a local folder is taken for one: a missing path
  (`runs/typo`, `./x`, `a/b/c`) is a local error listing the folders that are there.

`load_base` loads a base model (a hub id or a folder, as `from_pretrained` takes it): what the
fine-tune started from, for `uvft eval --base`.

Weights are read from safetensors only (an adapter folder holding only `adapter_model.bin` is
refused), remote code never runs, and the hub's errors become one line a user can act on, with the
token never shown (`hub_errors`, which `uvft push` uses too).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import models, runfolder
from pipeline.errors import UvftError
from pipeline.families import FAMILIES
from pipeline.models.spec import ModelSpec, load_spec, spec_from_records, weights_folder

logger = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
KINDS = ("adapter", "full", "merged", "base")


@dataclass
class Loaded:
    """A loaded model with what reproducing its outputs needs.

    kind: "adapter" (base + LoRA adapter), "full" (a full fine-tune's `<run>/model`), "merged" (a
    merged export or any other model folder), "base" (`load_base`). `spec` (uvft.json: the family,
    the prompts it was trained on) is read when first asked for.
    """

    model: Any
    processor: Any
    kind: str
    family: str
    generation_config: Any
    folder: Path | None  # where the weights were read from (None: a base given by hub id)
    digest: str | None = None  # weights_digest of the weights read (None: a base given by hub id)
    _spec: ModelSpec | None = field(default=None, repr=False)

    @functools.cached_property
    def mask_vae(self) -> Any:
        """The codec saved with the weights when the model writes masks as codes (models.vqvae), or None."""
        from pipeline.models import vqvae

        return vqvae.in_folder(self.folder)

    @functools.cached_property
    def spec(self) -> ModelSpec:
        if self._spec is not None:
            return self._spec
        if self.folder is None:
            raise UvftError("a base model has no uvft.json: it was not trained by uvft")
        return spec_for(self.folder)

    @property
    def is_adapter(self) -> bool:
        return self.kind == "adapter"


def load(
    source: str | Path,
    *,
    family: str | None = None,
    base: str | None = None,
    base_revision: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    device: str | None = None,
) -> Loaded:
    """Load a trained model (see the module doc) on `device` ("cpu", "cuda", ...; None: CUDA when
    available, else the CPU), in eval mode.

    family / base: what the caller already knows (the recipe's family, the base the run trained
    from, with `base_revision`); unset, they come from the folder's uvft.json (or adapter_config.json).
    """
    folder = resolve_source(source, revision=revision, token=token)
    weights = weights_folder(folder)
    spec = None
    if family is None or (base is None and (weights / "adapter_config.json").is_file()):
        spec = spec_for(weights)
    family_ = models.get(family or spec.family)  # type: ignore[union-attr]
    digest = weights_digest(weights)  # before reading them: what evidence of this model names
    if (weights / "adapter_config.json").is_file():
        if not (weights / "adapter_model.safetensors").is_file():
            raise UvftError(f"{weights} has no adapter_model.safetensors (uvft loads safetensors only)")
        base_name = base if base is not None else resolve_base(adapter_base(weights, spec), weights)
        model, processor = family_.load(base_name, revision=base_revision)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(weights))
        processor = _processor(weights) or processor
        kind = "adapter"
    elif (weights / "config.json").is_file():
        model, processor = family_.load(weights)
        kind = "full" if weights != folder or _trained_method(weights) == "full" else "merged"
    else:
        raise UvftError(
            f"{source} holds no adapter (adapter_config.json) and no model (config.json or model/)"
        )
    return Loaded(
        model=_to_device(model, device),
        processor=processor,
        kind=kind,
        family=family_.FAMILY,
        generation_config=pinned_generation_config(weights, model),
        folder=weights,
        digest=digest,
        _spec=spec,
    )


def load_base(name: str, family: str, *, revision: str | None = None, device: str | None = None) -> Loaded:
    """A base model (hub id or folder) with its processor and the pinned default generation config."""
    folder = Path(name).expanduser() if Path(name).expanduser().is_dir() else None
    digest = weights_digest(folder) if folder is not None else None
    model, processor = models.get(family).load(name, revision=revision)
    return Loaded(
        model=_to_device(model, device),
        processor=processor,
        kind="base",
        family=family,
        generation_config=pinned_generation_config(folder, model),
        folder=folder,
        digest=digest,
    )


_WEIGHTS = re.compile(r"model(-\d+-of-\d+)?\.safetensors")


def weights_digest(folder: Path) -> str | None:
    """sha256 of the weights a folder holds: its `adapter_model.safetensors` (what `sha256sum`
    prints for it), else its `model*.safetensors` shards read in name order; None when it holds
    none. Evaluation evidence, reports and cards name the weights they belong to by it."""
    folder = Path(folder)
    files = [folder / "adapter_model.safetensors"]
    if not files[0].is_file():
        files = sorted(p for p in folder.glob("model*.safetensors") if _WEIGHTS.fullmatch(p.name))
    if not files:
        return None
    h = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def _trained_method(folder: Path) -> str | None:
    """The adapter method uvft.json records for a model folder (or its run: `<run>/best`)."""
    for where in (folder, folder.parent):
        spec = load_spec(where)
        if spec is not None:
            return spec.method
    return None


def _to_device(model: Any, device: str | None) -> Any:
    import torch

    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()


def resolve_source(source: str | Path, *, revision: str | None = None, token: str | None = None) -> Path:
    """A local folder as it is, or a hub id downloaded with snapshot_download.

    Only a `namespace/name` whose namespace is not a local folder goes to the hub: anything that
    reads as a path (see `looks_local`) and is missing is a local error, so a typo in a run folder's
    name says what is there instead of "cannot reach the hub"."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UvftError(f"{path} is a file; give a run folder, an export folder or a hub id")
        return path
    if looks_local(str(source)) or not HUB_ID.match(str(source)):
        raise UvftError(missing_folder(str(source)))
    from huggingface_hub import snapshot_download

    with hub_errors(str(source), token=token):
        return Path(snapshot_download(repo_id=str(source), revision=revision, token=token))


def looks_local(source: str) -> bool:
    """Whether `source` names a local path rather than a hub id: it starts with `.`, `/` or `~`,
    has a path separator beyond one `namespace/name`, or its parent folder exists (`runs/x` where
    `runs/` is a folder here)."""
    separators = [s for s in (os.sep, os.altsep, "/") if s]
    if source.startswith((".", "~", *separators)):
        return True
    if sum(source.count(s) for s in set(separators)) > 1 or (os.sep != "/" and os.sep in source):
        return True
    return Path(source).expanduser().parent.is_dir()


def missing_folder(source: str, *, shown: int = 8) -> str:
    """One line for a local folder that does not exist: the nearest folder above it that does, the
    folders in it (close matches to the missing name first) and a "did you mean" when one is close."""
    path = Path(source).expanduser()
    missing, parent = path, path.parent
    while not parent.is_dir() and parent != parent.parent:
        missing, parent = parent, parent.parent
    try:
        names = sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # unreadable: say what is known
        names = []
    close = difflib.get_close_matches(missing.name, names, n=3, cutoff=0.5)
    names = close + [n for n in names if n not in close]
    here = str(parent) in ("", ".")
    text = f"{source}: no such folder"
    if missing != path:
        text += f", nor {_shown(parent / missing.name)}"
    if close:
        guess = parent / close[0] / path.relative_to(missing)
        text += f"; did you mean {_shown(guess if guess.is_dir() else parent / close[0])}?"
    if not names:
        return f"{text} ({'this folder' if here else parent} holds no folders)"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{text} (folders {'here' if here else f'in {parent}'}: {', '.join(names[:shown])}{more})"


def _shown(path: Path) -> str:
    return str(path)[2:] if str(path).startswith("./") else str(path)


def adapter_base(folder: Path, spec: ModelSpec | None = None) -> str:
    """The base model an adapter folder names: uvft.json's, else adapter_config.json's."""
    if spec is not None and spec.base_model:
        return spec.base_model
    config = json.loads((folder / "adapter_config.json").read_text())
    return str(config.get("base_model_name_or_path") or "")


def resolve_base(name: str, folder: Path) -> str:
    """A base model name as from_pretrained takes it: an existing folder, or a hub id. `name` is
    what the run folder `folder` (or `<run>/best`, `<run>/model` in it) records: a folder is found
    from anywhere (pipeline.runfolder.local_base; older runs recorded it relative to where they
    trained)."""
    for run in (folder, folder.parent):
        local = runfolder.local_base(name, run)
        if local is not None:
            return str(local)
    if HUB_ID.match(name):
        return name
    raise UvftError(
        f"the base model of {folder}, {name!r}, is a folder that is not on this machine "
        "(a local path of the machine that trained it); publish it with `uvft push --base-repo-id` "
        "or `--merged`, or run where it exists"
    )


def _processor(folder: Path) -> Any | None:
    """The processor saved next to the weights (it carries the run's tokenizer), if there is one."""
    if not (folder / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(folder))


def pinned_generation_config(folder: Path | None, model: Any) -> Any:
    """The folder's generation_config.json (pinned at training), else the pinned default."""
    from transformers import GenerationConfig

    if folder is not None and (folder / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(str(folder))
    from pipeline.models.generation import generation_config

    return generation_config(model, max_new_tokens=256)


def spec_for(folder: Path) -> ModelSpec:
    """The folder's uvft.json; for a run trained before uvft wrote one (or `<run>/best`), the
    parent run's, else one rebuilt from the run's recipe.yaml and its (cached) records."""
    for where in (folder, folder.parent):
        spec = load_spec(where)
        if spec is not None:
            return spec
    for where in (folder, folder.parent):
        if (where / runfolder.RECIPE).is_file():
            return _spec_from_run(where)
    family = _family_from_config(folder)
    raise UvftError(
        f"{folder} has no uvft.json (nor a recipe.yaml to rebuild it from): uvft cannot tell which "
        f"prompts this {family or 'model'} was trained on; export or push it with uvft"
    )


def _spec_from_run(run_dir: Path) -> ModelSpec:
    from pipeline.data.build import build
    from pipeline.recipe import validate

    recipe = validate(runfolder.read_recipe(run_dir) or {}, file=run_dir / runfolder.RECIPE)
    logger.info("%s has no uvft.json: rebuilding it from its recipe and records", run_dir)
    records = build(recipe, progress=False).load()
    base = recipe.model.id or runfolder.summary_base(run_dir) or ""
    return spec_from_records(
        recipe.model.family, base, recipe.adapter.method, records[recipe.data.train_split]
    )


def _family_from_config(folder: Path) -> str | None:
    config = folder / "config.json"
    if not config.is_file():
        return None
    model_type = json.loads(config.read_text()).get("model_type", "")
    return model_type if model_type in FAMILIES else None  # the families' model_type is their name


# ---------------------------------------------------------------------------- the hub's errors


@contextlib.contextmanager
def hub_errors(repo_id: str, *, token: str | None = None) -> Iterator[None]:
    """Turn what huggingface_hub raises into one UvftError line a user can act on, token scrubbed."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        LocalTokenNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def scrub(text: str) -> str:
        return text.replace(token, "***") if token else text

    def first_line(e: BaseException) -> str:
        return scrub(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)

    try:
        yield
    except LocalTokenNotFoundError:
        raise UvftError("no Hugging Face token: set HF_TOKEN or run `hf auth login`") from None
    except RepositoryNotFoundError as e:
        raise UvftError(
            f"{repo_id}: repository not found, or your token cannot see it ({first_line(e)})"
        ) from None
    except RevisionNotFoundError as e:
        raise UvftError(f"{repo_id}: revision not found ({first_line(e)})") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        server = (
            scrub((e.server_message or "").strip().splitlines()[0]) if e.server_message else first_line(e)
        )
        if status == 401:
            raise UvftError(f"the hub refused the token (401 Unauthorized): {server}") from None
        if status == 403:
            raise UvftError(f"no write access to {repo_id} (403 Forbidden): {server}") from None
        raise UvftError(f"the hub answered {status} for {repo_id}: {server}") from None
    except LocalEntryNotFoundError as e:  # offline, nothing cached
        raise UvftError(
            f"cannot reach the hub at {constants.ENDPOINT} for {repo_id}: {first_line(e)}"
        ) from None
    except (OSError, *_transport_errors()) as e:
        raise UvftError(f"cannot reach the hub at {constants.ENDPOINT}: {first_line(e)}") from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            module = __import__(name)
            return (module.TransportError,)
    return ()
