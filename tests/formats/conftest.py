"""Fixtures of the format tests."""

from __future__ import annotations

import pytest

from pipeline.formats import florence2
from pipeline.models import florence2 as florence2_model
from pipeline.records import Example

POST_PROCESS_SIZE = (640, 480)  # the image size the post-processor and our parse read boxes in


@pytest.fixture(scope="module")
def post_processed():
    """(reference, ours): transformers' Florence2Processor.post_process_generation of a rendered
    target under a task token, and our parse of the same target (one processor for the module)."""
    processor = florence2_model.build_processor(["a"], image_size=64)

    def run(ex: Example, task_token: str):
        _, target = florence2.render(ex)
        size = POST_PROCESS_SIZE
        reference = processor.post_process_generation(text=target, task=task_token, image_size=size)
        return reference[task_token], florence2.parse(target, ex.task, size)

    return run
