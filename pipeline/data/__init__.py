"""Data stages: building record datasets from sources, mixing, collating, and the demo shapes set."""
