"""Data stages: building record datasets from sources, mixing, collating, exporting (the demo set
they read by default is made in pipeline/demo/)."""
