"""The model families uvft knows, in one table: each names its format module (render and parse its
text) and its models module (load, tiny build, LoRA presets, batch encoding: the `Family` protocol
of pipeline.models.family). `formats.get` and `models.get` look a family up here and import its
module on first use (transformers is heavy), so adding a family is one line here and two modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.registry import Registry


@dataclass(frozen=True)
class FamilyModules:
    format: str  # dotted path of the format module
    models: str  # dotted path of the models module
    checkpoint: str  # the hub checkpoint a new recipe (`uvft init`) fine-tunes


FAMILY_MODULES: Registry[FamilyModules] = Registry("model family")
FAMILY_MODULES.register("florence2")(
    FamilyModules("pipeline.formats.florence2", "pipeline.models.florence2", "microsoft/Florence-2-base")
)
FAMILY_MODULES.register("paligemma")(
    FamilyModules("pipeline.formats.pali", "pipeline.models.paligemma", "google/paligemma2-3b-pt-224")
)

FAMILIES = tuple(FAMILY_MODULES.names())  # ("florence2", "paligemma")
DEFAULT_FAMILY = "florence2"  # uvft init's: the smaller checkpoint (0.23B parameters), quick to try
