"""Errors a person can act on: each names where the bad input is."""

from __future__ import annotations

from pathlib import Path


class UvftError(Exception):
    """Base class for errors uvft raises on purpose (the CLI prints them without a traceback)."""


class DataError(UvftError, ValueError):
    """Bad input data: names the file, the record and the field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        record: str | int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.record = record
        self.field = field
        self.reason = message
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if record is not None:
            where.append(f"record {record}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class RecipeError(UvftError, ValueError):
    """A recipe that does not validate: names the key's dotted path."""

    def __init__(self, message: str, *, path: str | None = None, file: str | Path | None = None) -> None:
        self.path = path
        self.file = str(file) if file is not None else None
        self.message = message  # without the file and key prefix
        prefix = ""
        if file is not None:
            prefix += f"{file}: "
        if path:
            prefix += f"{path}: "
        super().__init__(prefix + message)


class ModelError(UvftError, ValueError):
    """A model that cannot be loaded as asked: a missing folder, an unknown hub id, remote code,
    or weights that do not fit the class."""
