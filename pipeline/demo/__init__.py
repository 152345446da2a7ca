"""The synthetic "shapes" demo set: coloured shapes on light backgrounds, written in the on-disk
formats of real sources so the demo recipes run the same readers as COCO, VQAv2, ImageFolder and
RefCOCO. It makes data; the data stages (pipeline/data/) read it like any other source.

`pipeline.demo.shapes` is the public surface: `generate`, `written_params`, `canonical_params` and
the set's constants. Behind it, each module owns one part:

    layout.py   the set's names and file paths, the extra sets (no numpy: the CLI reads it)
    draw.py     the pixels: shapes, their masks and outlines, referring scenes, OCR images
    texts.py    the words: English and German captions, questions and human answers, referring phrases
    writers.py  one writer per on-disk format: COCO instances and captions, VQAv2, ImageFolder,
                RefCOCO's refs pickle + instances, OCR JSONL
    readme.py   the set's README
    shapes.py   `generate`: draws each image, words it and hands both to the writers
"""
