"""Removing stored files, and the folders they leave empty, once the rows that named them are gone."""

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from django.core.files.base import File
from django.core.files.storage import Storage
from django.db.models.fields.files import FieldFile


def stored_files_delete(names: Iterable[tuple[Storage, str]]) -> None:
    """Delete each (storage, name) and then every folder emptied by it, up to the storage's root."""
    folders: set[tuple[Path, Path]] = set()
    for storage, name in names:
        storage.delete(name)
        with contextlib.suppress(NotImplementedError):  # storages without local paths have no folders
            folders.add((Path(storage.path(name)).parent, Path(storage.path(""))))
    for folder, root in sorted(folders, key=lambda pair: len(pair[0].parts), reverse=True):
        _remove_empty_folders(folder, root=root)


def _remove_empty_folders(folder: Path, *, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            os.rmdir(folder)
        except OSError:  # not empty (another field's files, or a file written meanwhile) or already gone
            if folder.exists():
                return
        folder = folder.parent


def field_file_save(stored: FieldFile, name: str, content: File) -> None:
    """`stored.save(name, content, save=False)` that leaves no partial file behind when writing fails
    (a full disk): Django's file system storage keeps what it wrote before the error."""
    target = stored.storage.get_available_name(
        stored.field.generate_filename(stored.instance, name), max_length=stored.field.max_length
    )
    try:
        saved = stored.storage.save(target, content, max_length=stored.field.max_length)
    except BaseException:
        with contextlib.suppress(OSError):
            stored.storage.delete(target)
        raise
    stored.name = saved
    setattr(stored.instance, stored.field.attname, saved)
    stored._committed = True
