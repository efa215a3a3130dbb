"""Writing an export's NDJSON: one file per type, a new file once one would pass a size.

The same writer serves the service (files held in the database, in chunks, so that every
replica can serve them) and the command line (files in a directory). Memory stays
constant: a page of resources and one chunk of a file are held at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from service.export_reading import Exported

CHUNK_BYTES = 256 * 1024


@dataclass
class OpenFile:
    """A file being written: what it holds so far and the bytes not yet handed over."""

    resource_type: str
    number: int
    kind: str = "output"
    count: int = 0
    size: int = 0
    chunks: int = 0
    patients: dict[str, None] = field(default_factory=dict)
    pending: bytearray = field(default_factory=bytearray)


class Sink(Protocol):
    """Where files go: opened, given their bytes a chunk at a time, closed."""

    def open(self, resource_type: str, kind: str) -> OpenFile: ...

    def write(self, file: OpenFile, data: bytes) -> None: ...

    def close(self, file: OpenFile) -> None: ...


def line(content: str) -> bytes:
    """A resource's stored JSON as one NDJSON line (stored JSON is compact; one that holds a
    line break is written again without it)."""
    if "\n" in content or "\r" in content:
        content = json.dumps(json.loads(content), ensure_ascii=False, separators=(",", ":"))
    return content.encode("utf-8") + b"\n"


class Writer:
    """Writes the files of one type after another into a sink."""

    def __init__(self, sink: Sink, file_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.sink = sink
        self.file_bytes = file_bytes
        self.chunk_bytes = min(chunk_bytes, file_bytes)

    def write_type(
        self,
        resource_type: str,
        pages: Iterable[list[Exported]],
        on_page: Callable[[int], None] | None = None,
        kind: str = "output",
    ) -> int:
        """Write the resources of ``pages`` as files of ``resource_type``; how many."""
        current: OpenFile | None = None
        total = 0
        for page in pages:
            for resource in page:
                data = line(resource.content)
                if (
                    current is not None
                    and current.size
                    and current.size + len(data) > (self.file_bytes)
                ):
                    self._close(current)
                    current = None
                if current is None:
                    current = self.sink.open(resource_type, kind)
                current.pending += data
                current.size += len(data)
                current.count += 1
                if resource.patient:
                    current.patients[resource.patient] = None
                if len(current.pending) >= self.chunk_bytes:
                    self._flush(current)
            total += len(page)
            if on_page is not None:
                on_page(len(page))
        if current is not None:
            self._close(current)
        return total

    def _flush(self, file: OpenFile) -> None:
        if file.pending:
            self.sink.write(file, bytes(file.pending))
            file.pending.clear()
            file.chunks += 1

    def _close(self, file: OpenFile) -> None:
        self._flush(file)
        self.sink.close(file)


class DirectorySink:
    """Files in a directory: ``Goal.ndjson``, then ``Goal-2.ndjson``… for a split type."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.numbers: dict[str, int] = {}
        self.written: list[tuple[Path, OpenFile]] = []

    def _path(self, file: OpenFile) -> Path:
        ordinal = self.numbers[file.resource_type]
        suffix = "" if ordinal == 1 else f"-{ordinal}"
        return self.directory / f"{file.resource_type}{suffix}.ndjson"

    def open(self, resource_type: str, kind: str) -> OpenFile:
        self.numbers[resource_type] = self.numbers.get(resource_type, 0) + 1
        file = OpenFile(resource_type, len(self.written) + 1, kind)
        path = self._path(file)
        path.write_bytes(b"")
        self.written.append((path, file))
        return file

    def write(self, file: OpenFile, data: bytes) -> None:
        path = next(p for p, f in reversed(self.written) if f is file)
        with path.open("ab") as out:
            out.write(data)

    def close(self, file: OpenFile) -> None:
        return None
