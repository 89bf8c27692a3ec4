"""Template versions: named by the content hash of a template, its includes and its assets.

The files on disk stay the source of truth. A saved version is kept in the console's data
folder (`<data_dir>/studio/`: blobs by sha256, one JSON per version, one history file per
template) until it is promoted: written into the templates folder — or, when the folder is
read-only (operators who deploy templates from git), exported as a `.tar.gz` with the files
and a `changes.patch` to apply there.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.renderer.templating import TemplateLibrary
from shared.errors import PressroomError
from shared.templatefiles import template_names

Files = dict[str, bytes]

TEXT_SUFFIXES = (".html", ".htm", ".j2", ".jinja", ".xml", ".css", ".svg", ".txt", ".md")
# Asset references in templates and stylesheets: href/src attributes, url(), @import.
_REFS = re.compile(
    r"""(?:\b(?:href|src)\s*=\s*["']([^"'{}<>]+)["'])"""
    r"""|(?:url\(\s*["']?([^"')\s{}]+)["']?\s*\))"""
    r"""|(?:@import\s+["']([^"']+)["'])""",
    re.IGNORECASE,
)
MAX_FILES = 200
MAX_FILE_BYTES = 5 * 1024 * 1024


def _plain(rel: str) -> str | None:
    """A relative path inside the folder, or None (URLs, absolute paths, `..`, dotfiles)."""
    ref = rel.split("#", 1)[0].split("?", 1)[0].strip()
    if not ref or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", ref) or ref.startswith(("/", "\\")):
        return None
    parts = ref.replace("\\", "/").split("/")
    if any(p in ("", "..") or p.startswith(".") for p in parts if p != "."):
        return None
    return "/".join(p for p in parts if p != ".")


def file_set(folder: Path, name: str) -> list[str]:
    """What a version of `name` is made of: the template, what it extends/includes/imports
    (every template file when it computes an include name), and the assets they and their
    stylesheets reference inside the folder. The template first, the rest sorted."""
    library = TemplateLibrary(folder)
    name = library.check_name(name)
    deps, dynamic = library.dependencies(name)
    templates = (
        [str(p.relative_to(library.folder).as_posix()) for p in _template_files(library.folder)]
        if dynamic
        else deps
    )
    found: list[str] = [name, *[d for d in templates if d != name]]
    pending = list(found)
    while pending and len(found) < MAX_FILES:
        current = pending.pop()
        path = library.folder / current
        if path.suffix.lower() not in TEXT_SUFFIXES:
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        base = Path(current).parent
        for match in _REFS.finditer(text):
            raw = next(g for g in match.groups() if g)
            for candidate in {
                _plain(raw),
                _plain((base / raw).as_posix()) if _plain(raw) else None,
            }:
                if candidate and candidate not in found:
                    target = (library.folder / candidate).resolve()
                    if target.is_file() and target.is_relative_to(library.folder):
                        found.append(candidate)
                        pending.append(candidate)
    return [found[0], *sorted(found[1:])]


def _template_files(folder: Path) -> list[Path]:
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and p.suffix in (".html", ".htm", ".j2", ".jinja", ".xml")
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def read_files(folder: Path, name: str) -> Files:
    """The template's file set as it is on disk."""
    files: Files = {}
    for rel in file_set(folder, name):
        data = (folder / rel).read_bytes()
        if len(data) > MAX_FILE_BYTES:
            raise PressroomError(f"{rel} is over {MAX_FILE_BYTES // 1024 // 1024} MB")
        files[rel] = data
    return files


def version_id(files: Files) -> str:
    """The studio's id of a version: every path and its bytes, in path order (16 hex
    characters). Assets count, so a stylesheet's change is a version of its own; a report
    records `report_version` instead (the renderer's hash, templates only)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0")
        digest.update(hashlib.sha256(files[path]).digest())
    return digest.hexdigest()[:16]


def report_version(name: str, files: Files) -> str:
    """What a report rendered from `files` records as its `template_version` (and what
    `pressroom templates ls` lists): the renderer's hash of the template and what it
    includes. The files hold every template the name can read (all of them when it computes
    an include), so the hash is theirs alone."""
    with tempfile.TemporaryDirectory(prefix="pressroom-studio-") as scratch:
        root = Path(scratch)
        for rel, data in files.items():
            target = inside(root, rel)
            target.write_bytes(data)
        return TemplateLibrary(root).version(name)


def is_text(path: str, data: bytes) -> bool:
    if Path(path).suffix.lower() not in TEXT_SUFFIXES:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@contextmanager
def workspace(folder: Path, files: Files | None = None) -> Iterator[Path]:
    """A scratch copy of the templates folder with `files` written over it (removed after)."""
    with tempfile.TemporaryDirectory(prefix="pressroom-studio-") as scratch:
        root = Path(scratch) / "templates"
        if folder.is_dir():
            shutil.copytree(
                folder,
                root,
                # Links stay links: one leading out of the folder leads out of the copy too,
                # and the render's loader refuses it as it would in the pipeline.
                symlinks=True,
                ignore_dangling_symlinks=True,
                ignore=shutil.ignore_patterns(".*"),
                dirs_exist_ok=True,
            )
        root.mkdir(parents=True, exist_ok=True)
        for rel, data in (files or {}).items():
            target = inside(root, rel)
            target.write_bytes(data)
        yield root


def inside(root: Path, rel: str) -> Path:
    """Where `rel` is written under `root`: never through a link out of it (a link at the
    path itself is replaced, not followed)."""
    target = root / checked_path(rel)
    if target.is_symlink():
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(root.resolve()):
        raise PressroomError(f"'{rel}' leads outside the templates folder")
    return target


def checked_path(rel: str) -> str:
    plain = _plain(rel)
    if plain is None or plain != rel:
        raise PressroomError(f"'{rel}' is not a plain path inside the templates folder")
    return plain


@dataclass(frozen=True)
class HistoryEntry:
    id: str
    author: str
    at: str
    message: str
    event: str  # save | restore | promote
    restored_from: str | None = None
    override: str | None = None


class VersionStore:
    """Saved versions of templates, on the console's disk (`<data_dir>/studio`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _blob(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest

    def _meta(self, vid: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{16}", vid):
            raise PressroomError(f"'{vid}' is not a version id")
        return self.root / "versions" / f"{vid}.json"

    def _history(self, template: str) -> Path:
        safe = template.replace("/", "~")
        return self.root / "history" / f"{safe}.jsonl"

    def put(self, template: str, files: Files) -> tuple[str, bool]:
        """Store `files` as a version of `template`: (its id, whether it is new)."""
        vid = version_id(files)
        meta = self._meta(vid)
        if meta.is_file():
            return vid, False
        index: dict[str, str] = {}
        for rel, data in files.items():
            digest = hashlib.sha256(data).hexdigest()
            blob = self._blob(digest)
            if not blob.is_file():
                _write(blob, data)
            index[rel] = digest
        order = list(files)  # the template first
        _write(
            meta,
            json.dumps({"id": vid, "template": template, "files": index, "order": order}).encode(),
        )
        return vid, True

    def exists(self, vid: str) -> bool:
        try:
            return self._meta(vid).is_file()
        except PressroomError:
            return False

    def files(self, template: str, vid: str) -> Files:
        try:
            meta = json.loads(self._meta(vid).read_text())
        except FileNotFoundError:
            raise PressroomError(f"no version {vid} of {template}") from None
        if meta.get("template") != template:
            raise PressroomError(f"version {vid} is not a version of {template}")
        return {rel: self._blob(meta["files"][rel]).read_bytes() for rel in meta["order"]}

    def add(self, template: str, entry: HistoryEntry) -> None:
        path = self._history(template)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(entry)) + "\n")

    def history(self, template: str) -> list[HistoryEntry]:
        """Newest first."""
        path = self._history(template)
        if not path.is_file():
            return []
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(HistoryEntry(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        return entries[::-1]

    def head(self, template: str) -> str | None:
        """The newest saved or restored version (promotions leave the head where it is)."""
        for entry in self.history(template):
            if entry.event in ("save", "restore"):
                return entry.id
        return None

    def save(
        self, template: str, files: Files, *, author: str, message: str
    ) -> tuple[HistoryEntry, bool]:
        vid, created = self.put(template, files)
        entry = HistoryEntry(vid, author, _now(), message.strip()[:500], "save")
        self.add(template, entry)
        return entry, created

    def restore(self, template: str, vid: str, *, author: str, message: str) -> HistoryEntry:
        self.files(template, vid)  # exists, and is this template's
        entry = HistoryEntry(
            vid, author, _now(), message.strip()[:500] or f"restored {vid}", "restore", vid
        )
        self.add(template, entry)
        return entry


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def diff(
    old: Files, new: Files, *, old_label: str = "a", new_label: str = "b"
) -> list[dict[str, Any]]:
    """Per changed file: its status and a unified diff (text files)."""
    changes: list[dict[str, Any]] = []
    for rel in sorted(set(old) | set(new)):
        before, after = old.get(rel), new.get(rel)
        if before == after:
            continue
        status = "added" if before is None else "removed" if after is None else "changed"
        texts = [x for x in (before, after) if x is not None]
        if not all(is_text(rel, x) for x in texts):
            changes.append(
                {"path": rel, "status": "binary" if status == "changed" else status, "diff": ""}
            )
            continue
        lines = difflib.unified_diff(
            (before or b"").decode().splitlines(keepends=True),
            (after or b"").decode().splitlines(keepends=True),
            f"{old_label}/{rel}",
            f"{new_label}/{rel}",
        )
        changes.append({"path": rel, "status": status, "diff": "".join(lines)})
    return changes


def writable(folder: Path, paths: list[str]) -> bool:
    """Whether promotion can write these files into the folder."""
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        return False
    for rel in paths:
        target = folder / rel
        if target.exists() and not os.access(target, os.W_OK):
            return False
        parent = target.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK | os.X_OK):
            return False
    return True


@dataclass(frozen=True)
class Promotion:
    mode: str  # written | export
    files: list[str]
    export: Path | None = None


def promote(
    folder: Path, files: Files, exports: Path, label: str, *, export: bool = False
) -> Promotion:
    """Write the version's files into the templates folder (each renamed into place), or,
    when the folder is read-only (or `export`), export them with a patch against it."""
    changed = [rel for rel, data in files.items() if _read(folder / rel) != data]
    if not export and writable(folder, list(files)):
        for rel in changed:
            target = inside(folder, rel)
            tmp = target.with_name(f".{target.name}.studio.tmp")
            tmp.write_bytes(files[rel])
            os.replace(tmp, target)
        return Promotion("written", changed)
    current = {rel: data for rel in files if (data := _read(folder / rel)) is not None}
    patch = "".join(d["diff"] for d in diff(current, files))
    exports.mkdir(parents=True, exist_ok=True)
    target = exports / f"{label}-{int(time.time())}.tar.gz"
    with tarfile.open(target, "w:gz") as tar:
        for rel, data in files.items():
            _add(tar, f"templates/{rel}", data)
        _add(tar, "changes.patch", patch.encode())
    return Promotion("export", changed, target)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def listed(folder: Path) -> list[str]:
    return template_names(folder)
