"""Reading mail archives file by file, without unpacking them: the input side of the importer.

Accepted inputs (PATH):
- a directory in the CMU maildir layout `[maildir/]<mailbox>/<folder>/.../<message>` (one RFC 822
  message per file, as the Enron corpus ships), Maildir++ too (`cur`/`new`/`tmp` are skipped over,
  a leading dot of a folder name is dropped);
- a `.tar`, `.tar.gz`, `.tgz` (any compression `tarfile` knows) of such a directory, streamed member by
  member with `tarfile`'s stream mode: nothing is written to disk and one message is in memory at a time;
- mbox files (a file whose first line starts with `From `), anywhere in the tree: each is a folder named
  after the file (`alice/Sent.mbox` is alice's folder `Sent`);
- `.eml` files (or any other file: one message each) or a directory of them.

A file directly under PATH (no mailbox directory) belongs to a mailbox named after PATH, with no folder;
the importer then files it by direction (sent by the owner: Sent Items, else Inbox).
"""

from __future__ import annotations

import mailbox
import os
import re
import tarfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAILDIR_PLUMBING = frozenset({"cur", "new", "tmp"})
_MBOX_SPLIT = re.compile(rb"(?:\A|\n)From [^\n]*\n")


@dataclass(slots=True, frozen=True)
class ArchiveFile:
    """One message as found in the archive: whose mailbox, which folder (path parts), raw bytes."""

    mailbox: str
    folder: tuple[str, ...]
    source: str  # path inside the archive, for reports ('#n' appended for the n-th message of an mbox)
    data: bytes


@dataclass
class ArchiveReader:
    """Iterate the messages of PATH. `only`: mailbox names to read (others are counted, not read).

    After iteration: `mailboxes_seen` (every mailbox name, read or not), `files_filtered` (files of
    mailboxes left out by `only`), `skipped` ((source, reason) of entries that are not mail).
    """

    path: Path
    only: Collection[str] | None = None
    mailboxes_seen: set[str] = field(default_factory=set)
    files_filtered: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.exists():
            raise FileNotFoundError(f"no such file or directory: {self.path}")

    @property
    def root_name(self) -> str:
        name = self.path.name
        for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".mbox", ".eml"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)] or name
        return name

    def __iter__(self) -> Iterator[ArchiveFile]:
        if self.path.is_dir():
            yield from self._walk_dir()
        elif tarfile.is_tarfile(self.path):
            yield from self._walk_tar()
        else:
            yield from self._one_file(self.path)

    # ------------------------------------------------------------ layouts

    def _place(self, rel: str) -> tuple[str, tuple[str, ...], str] | None:
        """Archive-relative path -> (mailbox, folder parts, file name); None when it is left out."""
        parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
        if len(parts) > 1 and parts[0].lower() == "maildir":
            parts = parts[1:]
        if not parts:
            return None
        name = parts[-1]
        folder: tuple[str, ...]
        if len(parts) == 1:
            mbox_name, folder = self.root_name, ()
        else:
            mbox_name = parts[0]
            folder = tuple(p.lstrip(".") or p for p in parts[1:-1] if p.lower() not in MAILDIR_PLUMBING)
        self.mailboxes_seen.add(mbox_name)
        if self.only is not None and mbox_name not in self.only:
            self.files_filtered += 1
            return None
        if name.startswith("."):
            self.skipped.append((rel, "hidden file, not mail"))
            return None
        return mbox_name, folder, name

    def _walk_dir(self) -> Iterator[ArchiveFile]:
        for dirpath, dirnames, filenames in os.walk(self.path):
            dirnames.sort()  # a stable order, whatever the file system's
            for fn in sorted(filenames):
                full = Path(dirpath) / fn
                rel = full.relative_to(self.path).as_posix()
                placed = self._place(rel)
                if placed is None:
                    continue
                with open(full, "rb") as fh:
                    head = fh.read(5)
                if head == b"From ":
                    yield from self._disk_mbox(full, rel, placed)
                else:
                    yield ArchiveFile(placed[0], placed[1], rel, full.read_bytes())

    def _walk_tar(self) -> Iterator[ArchiveFile]:
        with tarfile.open(self.path, "r|*") as tf:  # stream mode: members in order, never seeking
            for member in tf:
                if not member.isfile():
                    continue
                placed = self._place(member.name)
                if placed is None:
                    continue
                fh = tf.extractfile(member)
                if fh is None:
                    self.skipped.append((member.name, "unreadable tar member"))
                    continue
                data = fh.read()
                if data.startswith(b"From "):
                    yield from self._split_mbox(data, member.name, placed)
                else:
                    yield ArchiveFile(placed[0], placed[1], member.name, data)

    def _one_file(self, path: Path) -> Iterator[ArchiveFile]:
        self.mailboxes_seen.add(self.root_name)
        if self.only is not None and self.root_name not in self.only:
            self.files_filtered += 1
            return
        with open(path, "rb") as fh:
            head = fh.read(5)
        if head == b"From ":
            # A lone mbox is a whole mailbox without folders: filed by direction.
            yield from self._disk_mbox(path, path.name, (self.root_name, (), ""))
        else:
            yield ArchiveFile(self.root_name, (), path.name, path.read_bytes())

    # ------------------------------------------------------------ mbox

    @staticmethod
    def _mbox_folder(folder: tuple[str, ...], name: str) -> tuple[str, ...]:
        stem = name[:-5] if name.lower().endswith(".mbox") else name
        return (*folder, stem) if stem else folder

    def _disk_mbox(self, path: Path, rel: str, placed: tuple[str, tuple[str, ...], str]) -> Iterator[ArchiveFile]:
        box = mailbox.mbox(path, create=False)
        folder = self._mbox_folder(placed[1], placed[2])
        try:
            for i, key in enumerate(box.iterkeys()):
                yield ArchiveFile(placed[0], folder, f"{rel}#{i + 1}", box.get_bytes(key))
        finally:
            box.close()

    def _split_mbox(self, data: bytes, rel: str, placed: tuple[str, tuple[str, ...], str]) -> Iterator[ArchiveFile]:
        # An mbox inside a tar: mailbox.mbox needs a file on disk, so split on the From_ lines here.
        folder = self._mbox_folder(placed[1], placed[2])
        for i, chunk in enumerate(c for c in _MBOX_SPLIT.split(data) if c.strip()):
            yield ArchiveFile(placed[0], folder, f"{rel}#{i + 1}", chunk)
