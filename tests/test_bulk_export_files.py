"""The NDJSON writer of bulk exports: files split at the configured size, nothing lost,
reordered or repeated, whatever the resources' sizes and the pages they come in."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from service.export_files import DirectorySink, Writer
from service.export_reading import Exported

resource = st.builds(
    lambda n, text, patient: Exported(
        str(n),
        json.dumps({"resourceType": "Goal", "id": str(n), "note": text}, separators=(",", ":")),
        f"Patient/{patient}",
    ),
    st.integers(0, 10**6),
    st.text(min_size=0, max_size=300),
    st.integers(0, 5),
)


@settings(max_examples=40, deadline=None)
@given(
    pages=st.lists(st.lists(resource, max_size=8), max_size=8),
    file_bytes=st.integers(64, 2048),
    chunk_bytes=st.integers(16, 512),
)
def test_files_split_at_the_size_and_hold_every_resource_once_in_order(
    pages: list[list[Exported]], file_bytes: int, chunk_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        sink = DirectorySink(Path(directory))
        written = Writer(sink, file_bytes, chunk_bytes).write_type("Goal", pages)
        everything = [r for page in pages for r in page]
        assert written == len(everything)
        files = [(path.read_bytes(), file) for path, file in sink.written]
    lines = [line for data, _ in files for line in data.splitlines()]
    assert [json.loads(line)["id"] for line in lines] == [r.id for r in everything]
    for position, (data, file) in enumerate(files):
        assert data and data.endswith(b"\n")
        assert file.count == data.count(b"\n") and file.size == len(data)
        # Past the size only when one resource alone is larger.
        assert len(data) <= file_bytes or file.count == 1
        if position + 1 < len(files):
            following = files[position + 1][0].split(b"\n", 1)[0] + b"\n"
            assert len(data) + len(following) > file_bytes
    assert {p for _, file in files for p in file.patients} == {r.patient for r in everything}
    if len(files) > 1:
        names = [path.name for path, _ in sink.written]
        assert names[:2] == ["Goal.ndjson", "Goal-2.ndjson"]


def test_a_stored_document_with_a_line_break_stays_on_one_line() -> None:
    with tempfile.TemporaryDirectory() as directory:
        sink = DirectorySink(Path(directory))
        document = '{\n  "resourceType": "Goal",\n  "id": "1"\n}'
        Writer(sink, 1024).write_type("Goal", [[Exported("1", document, "Patient/1")]])
        ((path, _),) = sink.written
        assert path.read_bytes() == b'{"resourceType":"Goal","id":"1"}\n'


query = st.builds(
    lambda resource_type, name, values: f"{resource_type}?{name}={','.join(values)}",
    st.sampled_from(["CarePlan", "Goal", "Observation", "Flag", "QuestionnaireResponse"]),
    st.sampled_from(["status", "lifecycle-status", "patient", "category", "code"]),
    st.lists(st.from_regex(r"[a-z0-9|/:.\-]{1,12}", fullmatch=True), min_size=1, max_size=3),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(query, min_size=1, max_size=4))
def test_a_type_filter_list_splits_into_its_queries_whatever_commas_they_hold(
    queries: list[str],
) -> None:
    from api.fhir.export_request import split_type_filters

    assert split_type_filters(",".join(queries)) == queries
