"""The shapes set's names and file layout: its splits and formats, the opt-in extra sets and where
every file lies, relative to the set's folder. Plain constants, without numpy or Pillow, so the
command line offers the extra sets' names without loading the generator."""

from __future__ import annotations

SPLITS = ("train", "val")
FORMATS = ("coco_detection", "coco_captions", "vqav2", "image_folder")  # the readers of the main set
README = "README.md"
README_TITLE = "# shapes: the synthetic demo set of uvft"  # README's first line: how a shapes set is known
PARAMS_FILE = "shapes.json"  # the generator's arguments, written with the set

# The opt-in extra sets, in the order they are written. Their names are option values a user
# writes (data.demo.extra_tasks, --extra-tasks), not task names: "ocr" names a set of images.
REFER_SET = "refer"
OCR_SET = "ocr"  # a user-facing option value, kept as spelled in recipes (the set, not the task)
CAPTIONS_DE_SET = "captions_de"
# the referring scenes described region by region (Visual Genome's layout), in detailed captions
# and paragraphs (JSONL), and the OCR words one region each (JSONL): Florence-2's region tasks.
# It writes about the "refer" and "ocr" images, so it needs both sets.
REGIONS_SET = "regions"
EXTRA_TASKS = (REFER_SET, OCR_SET, CAPTIONS_DE_SET, REGIONS_SET)
REGIONS_NEEDS = (REFER_SET, OCR_SET)

# Every image set lies under IMAGES, and each names its images relative to it, so one folder
# serves every reader (the readers' `images` parameter).
IMAGES = "images"

# The main set: one image set, written four ways.
MAIN_IMAGES = "{split}"  # <image_id:06d>.png, relative to images/
IMAGE_FOLDER = "imagefolder/{split}"  # <class>/<image_id:06d>.png
INSTANCES = "annotations/instances_{split}.json"
CAPTIONS = "annotations/captions_{split}.json"
VQA_QUESTIONS = "annotations/v2_OpenEnded_shapes_{split}_questions.json"
VQA_ANNOTATIONS = "annotations/v2_shapes_{split}_annotations.json"

# The extra sets' files.
REFER_IMAGES = "refer_{split}"  # relative to images/, as instances.json's file names are
REFER_INSTANCES = "refer/instances.json"
REFER_REFS = "refer/refs(unc).p"
OCR_IMAGES = "ocr_{split}"  # relative to images/, as the JSONL's image paths are
OCR_JSONL = "ocr/ocr_{split}.jsonl"
CAPTIONS_DE = "annotations/captions_{split}_de.json"
REGIONS_INSTANCES = "regions/instances_{split}.json"  # COCO instances of the referring scenes, per split
VG_REGIONS = "regions/{split}/region_descriptions.json"  # Visual Genome 1.2's files, one pair per split
VG_IMAGES = "regions/{split}/image_data.json"
DETAILED_CAPTIONS = "regions/captions_{split}.jsonl"  # detailed captions and paragraphs of the scenes
REGION_OCR_JSONL = "ocr/region_ocr_{split}.jsonl"  # one line per word: its box -> the word
OCR_TEXT_JSONL = "ocr/ocr_text_{split}.jsonl"  # the OCR images' text without regions (`<OCR>`)
