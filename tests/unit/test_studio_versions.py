"""Studio versions: named by the content of a template, its includes and its assets; saved,
listed, diffed, restored and promoted (written, or exported when the folder is not ours)."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from services.console.studio import preview, shadow, versions
from services.console.studio.versions import VersionStore
from shared.errors import PressroomError

TEMPLATE = (
    '{% extends "_base.html" %}\n{% block body %}<img src="logo.svg">'
    "<p>{{ total }}</p>{% endblock %}\n"
)
BASE = (
    '<html><head><link rel="stylesheet" href="css/report.css"></head>'
    "<body>{% block body %}{% endblock %}</body></html>\n"
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    (root / "css").mkdir(parents=True)
    (root / "report.html").write_text(TEMPLATE)
    (root / "_base.html").write_text(BASE)
    (root / "css" / "report.css").write_text("@import 'fonts.css'; p { color: red }\n")
    (root / "css" / "fonts.css").write_text("body { font-family: sans-serif }\n")
    (root / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / "other.html").write_text("<p>{{ something_else }}</p>")
    return root


def test_the_file_set_is_the_template_its_includes_and_their_assets(folder: Path) -> None:
    assert versions.file_set(folder, "report.html") == [
        "report.html",
        "_base.html",
        "css/fonts.css",
        "css/report.css",
        "logo.svg",
    ]


def test_the_version_is_stable_across_reads_and_copies(folder: Path, tmp_path: Path) -> None:
    first = versions.version_id(versions.read_files(folder, "report.html"))
    assert versions.version_id(versions.read_files(folder, "report.html")) == first
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert versions.version_id(versions.read_files(copy, "report.html")) == first
    assert len(first) == 16 and int(first, 16) >= 0


@pytest.mark.parametrize(
    "changed", ["report.html", "_base.html", "css/report.css", "css/fonts.css", "logo.svg"]
)
def test_the_version_changes_when_any_part_changes(folder: Path, changed: str) -> None:
    before = versions.version_id(versions.read_files(folder, "report.html"))
    (folder / changed).write_text((folder / changed).read_text() + "\n")
    assert versions.version_id(versions.read_files(folder, "report.html")) != before


def test_an_unrelated_file_leaves_the_version_alone(folder: Path) -> None:
    before = versions.version_id(versions.read_files(folder, "report.html"))
    (folder / "other.html").write_text("<p>changed</p>")
    (folder / "unused.css").write_text("p {}")
    assert versions.version_id(versions.read_files(folder, "report.html")) == before


def test_save_history_restore_and_diff(folder: Path, tmp_path: Path) -> None:
    store = VersionStore(tmp_path / "studio")
    live = versions.read_files(folder, "report.html")
    first, created = store.save("report.html", live, author="ann", message="as it was")
    assert created and first.id == versions.version_id(live)
    changed = {**live, "report.html": TEMPLATE.replace("total", "grand_total").encode()}
    second, _ = store.save("report.html", changed, author="ann", message="rename")
    again, created = store.save("report.html", changed, author="bob", message="same content")
    assert not created and again.id == second.id  # content-addressed: one version
    assert store.head("report.html") == second.id
    assert store.files("report.html", first.id) == live

    restored = store.restore("report.html", first.id, author="ann", message="")
    assert store.head("report.html") == first.id and restored.restored_from == first.id
    events = [(e.event, e.id, e.author) for e in store.history("report.html")]
    assert events == [
        ("restore", first.id, "ann"),
        ("save", second.id, "bob"),
        ("save", second.id, "ann"),
        ("save", first.id, "ann"),
    ]
    [change] = versions.diff(live, changed)
    assert change["path"] == "report.html" and change["status"] == "changed"
    lines = change["diff"].splitlines()
    assert lines[:2] == ["--- a/report.html", "+++ b/report.html"]
    assert any(line.startswith("-") and "{{ total }}" in line for line in lines[2:])
    assert any(line.startswith("+") and "{{ grand_total }}" in line for line in lines[2:])
    with pytest.raises(PressroomError, match="not a version of"):
        store.files("other.html", first.id)
    with pytest.raises(PressroomError, match="not a version id"):
        store.files("report.html", "../../etc/passwd")


def test_promotion_writes_the_folder_or_exports_with_a_patch(folder: Path, tmp_path: Path) -> None:
    live = versions.read_files(folder, "report.html")
    changed = {**live, "css/report.css": b"@import 'fonts.css'; p { color: blue }\n"}

    exported = versions.promote(folder, changed, tmp_path / "exports", "report", export=True)
    assert exported.mode == "export" and exported.files == ["css/report.css"]
    assert (folder / "css/report.css").read_bytes() == live["css/report.css"]  # untouched
    assert exported.export is not None
    with tarfile.open(exported.export) as tar:
        names = tar.getnames()
        patch = tar.extractfile("changes.patch").read().decode()  # type: ignore[union-attr]
        shipped = tar.extractfile("templates/css/report.css").read()  # type: ignore[union-attr]
    assert "templates/report.html" in names and shipped == changed["css/report.css"]
    assert (
        "-@import 'fonts.css'; p { color: red }" in patch
        and "+@import 'fonts.css'; p { color: blue }" in patch
    )

    written = versions.promote(folder, changed, tmp_path / "exports", "report")
    assert written.mode == "written" and written.files == ["css/report.css"]
    assert (folder / "css/report.css").read_bytes() == changed["css/report.css"]
    assert versions.version_id(versions.read_files(folder, "report.html")) == versions.version_id(
        changed
    )


def test_paths_outside_the_folder_are_refused() -> None:
    for bad in ("../x.html", "/etc/passwd", ".hidden.html", "a/../../b.html"):
        with pytest.raises(PressroomError, match="plain path"):
            versions.checked_path(bad)


def test_a_candidate_is_the_folder_now_a_changed_file_or_a_changed_folder(
    folder: Path, tmp_path: Path
) -> None:
    live = versions.read_files(folder, "report.html")
    assert shadow.candidate_files(folder, "report.html", None) == live
    changed = tmp_path / "changed.html"
    changed.write_text(TEMPLATE.replace("total", "grand_total"))
    as_file = shadow.candidate_files(folder, "report.html", changed)
    assert as_file == {**live, "report.html": changed.read_bytes()}  # includes as they are
    other = tmp_path / "other-folder"
    shutil.copytree(folder, other)
    (other / "_base.html").write_text(BASE.replace("<body>", "<body class='x'>"))
    as_folder = shadow.candidate_files(folder, "report.html", other)
    assert as_folder["_base.html"] != live["_base.html"]
    with pytest.raises(PressroomError, match="no file or folder"):
        shadow.candidate_files(folder, "report.html", tmp_path / "missing.html")


def _result(
    status: str, ratio: float | None = None, pages: tuple[int, int] = (1, 1)
) -> dict[str, Any]:
    changed = [] if ratio is None else [{"page": 1, "ratio": ratio, "regions": []}]
    return {
        "status": status,
        "pages": {"before": pages[0], "after": pages[1]},
        "changed_pages": changed,
    }


def test_the_verdict_fails_on_a_failure_and_weighs_changes_against_the_threshold() -> None:
    same, small = _result("same"), _result("changed", 0.004)
    assert shadow.verdict([same, same], 0.0) == "pass"
    assert shadow.verdict([same, small], 0.0) == "changed"
    assert shadow.verdict([same, small], 0.01) == "pass"
    assert shadow.verdict([small, _result("failed")], 1.0) == "fail"
    more_pages = _result("changed", 0.001, pages=(1, 2))
    assert shadow.verdict([more_pages], 0.5) == "changed"  # a page count change always counts
    assert shadow.verdict([_result("skipped")], 0.0) == "pass"
    summary = shadow.summary([same, small, _result("failed")], 5, 0.0)
    assert summary == {
        "total": 5,
        "done": 3,
        "failed": 1,
        "changed": 1,
        "same": 1,
        "skipped": 0,
        "beyond_threshold": 1,
        "verdict": "fail",
    }


def test_problems_are_placed_at_their_file_and_line() -> None:
    source = {"r.html": b"<h1>x</h1>\n{% include '_nope.html' %}\n<p>{{ total }}</p>\n"}
    syntax = preview.problem_of("template syntax error at r.html:3: unexpected '}'", "r.html")
    assert (syntax.file, syntax.line) == ("r.html", 3)
    missing = preview.problem_of("template 'r.html' includes missing template '_nope.html'")
    assert (missing.file, preview.located(missing, source).line) == ("r.html", 2)
    declared = preview.validation_problem("r.html: variable 'total' is used but not declared")
    assert (declared.file, preview.located(declared, source).line) == ("r.html", 3)
    assert preview.validation_problem("r.html:7: unknown filter 'x'").line == 7


def test_an_edit_never_writes_through_a_link_out_of_the_folder(
    folder: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.html").write_text("keep me")
    (folder / "linked.html").symlink_to(outside / "victim.html")
    (folder / "sub").symlink_to(outside, target_is_directory=True)
    with versions.workspace(folder, {"linked.html": b"changed"}) as scratch:
        assert (scratch / "linked.html").read_bytes() == b"changed"
    with (
        pytest.raises(PressroomError, match="outside"),
        versions.workspace(folder, {"sub/new.html": b"x"}),
    ):
        pass
    versions.promote(folder, {"linked.html": b"promoted"}, tmp_path / "exports", "x")
    assert (outside / "victim.html").read_text() == "keep me"
    assert (folder / "linked.html").read_bytes() == b"promoted"
    assert not (outside / "new.html").exists()
