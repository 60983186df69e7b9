"""Turning the files of a request into `FieldUpload`s, and the error that names every unusable one.

Three ways in, combinable in one request:
- the channel slots (`red`, `green`, `blue`, `yellow`) or `multichannel`: one field;
- `files`: any number of channel files, grouped into fields by their `{ID}_{channel}` names or
  by an explicit assignment, and 4-plane TIFFs (one field each);
- zip archives in `files`, holding fields in the Kaggle layout (`{ID}_{channel}.png|tif|tiff`,
  at any folder depth).

Folders name fields. A file's folder is its relative path (a folder upload sends them in `paths`,
one per file of `files`, since the multipart file name carries no folder) or, inside a zip, the
zip's name and the entry's folders. A bare `blue.png` (`red`, `green`, `yellow`) is that channel of
the field named after its folder; an `{ID}_{channel}` file keeps its ID unless the same ID comes
from several folders, when each becomes `{folder}_{ID}`. A folder is named by its last component,
or by as many trailing components as tell it from the others. Two files with the same relative
path are refused, never one silently replacing the other.

Archives are treated as hostile: entries with absolute paths, `..`, symlinks, encryption or
nested archives, too many entries or too many bytes reject the whole archive before anything is
unpacked. Unpacking is checked as it inflates: an entry stops at the size it declared, one that
does not start like a PNG or TIFF stops at its first bytes (its field is then refused by name), and all archives of a request together stop at `ZipLimits.max_total_bytes`
(at most `HPAWEB_MAX_UPLOAD_BYTES`), so a request never takes more than twice that in temporary
space (the upload spooled, plus what was unpacked).
"""

import contextlib
import errno
import json
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.utils.datastructures import MultiValueDict

from cells import ml_config
from ml.archives import EntryHazard, entry_hazard, entry_parts
from ml.constants import CHANNELS
from ml.io import FIELD_FILE_PATTERN

_FIELD_FILE = re.compile(FIELD_FILE_PATTERN, re.IGNORECASE)
# A file named after its channel alone, as many microscopes write one folder per field.
BARE_CHANNEL_FILE_PATTERN = rf"^({'|'.join(CHANNELS)})\.(?:png|tiff?)$"
_BARE_CHANNEL_FILE = re.compile(BARE_CHANNEL_FILE_PATTERN, re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_IMAGE_EXTENSIONS = (".png", ".tif", ".tiff")
_TIFF_EXTENSIONS = (".tif", ".tiff")
_ARCHIVE_EXTENSIONS = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
_COPY_CHUNK_BYTES = 1024 * 1024
# Django cuts longer uploaded file names down to this (keeping the extension).
_MAX_FILE_NAME_CHARS = 255
_SNIFF_BYTES = 64
# How a PNG and a TIFF (classic or BigTIFF, either byte order) begin.
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class FieldUpload:
    """The files of one field as they arrive: channel files, or one multi-channel TIFF."""

    name: str
    channel_files: Mapping[str, File] = dataclass_field(default_factory=dict)
    multichannel_file: File | None = None


class JobInputError(ValidationError):
    """One or more uploaded fields are unusable; `field_errors` maps field name to the reason."""

    def __init__(self, field_errors: Mapping[str, str]) -> None:
        self.field_errors = dict(field_errors)
        super().__init__([f"{name}: {reason}" for name, reason in self.field_errors.items()])


@dataclass(frozen=True)
class Assignment:
    """The user's choice of field and channel for one uploaded file."""

    field: str
    channel: str  # one of CHANNELS, or "multichannel" for a 4-plane TIFF


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int
    max_total_bytes: int
    max_entry_bytes: int

    @classmethod
    def from_settings(cls) -> "ZipLimits":
        # The largest valid entry: a 4-plane 16-bit uncompressed TIFF at the largest accepted side.
        largest_image = len(CHANNELS) * 2 * ml_config.max_side_px() ** 2 + 1024**2
        return cls(
            max_entries=settings.HPAWEB_ZIP_MAX_ENTRIES,
            max_total_bytes=min(settings.HPAWEB_ZIP_MAX_BYTES, settings.HPAWEB_MAX_UPLOAD_BYTES),
            max_entry_bytes=largest_image,
        )


def field_name_from_files(files: Iterable[UploadedFile]) -> str | None:
    """The {ID} shared by files named {ID}_{channel}.png, if they share one."""
    ids = {match[1] for f in files if (match := _FIELD_FILE.match(f.name or ""))}
    return ids.pop() if len(ids) == 1 else None


def clean_field_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise JobInputError(
            {
                "name": f"The field ID {name!r} is not allowed: a field ID may hold letters, digits, '.', '_' and '-' only "
                "(at most 200), and must start with a letter or digit."
            }
        )
    return name


def single_field_upload(files: Mapping[str, UploadedFile], *, name: str = "") -> FieldUpload:
    """One field from files posted under the channel names (red, green, blue, yellow)."""
    channel_files = {channel: files[channel] for channel in CHANNELS if files.get(channel)}
    multichannel = files.get("multichannel")
    if not channel_files and multichannel is None:
        raise JobInputError({"upload": "No files were uploaded; add at least the green and blue channels of a field."})
    if multichannel is not None and channel_files:
        raise JobInputError({"upload": "Upload either one multi-channel TIFF or separate channel files, not both."})
    guessed = field_name_from_files(channel_files.values())
    if not name and multichannel is not None:
        guessed = _stem(multichannel.name or "")
    return FieldUpload(
        name=clean_field_name(name or guessed or "field"), channel_files=channel_files, multichannel_file=multichannel
    )


def parse_assignments(text: str) -> dict[str, Assignment]:
    """`{"file name": {"field": "ID", "channel": "green"}, ...}` (JSON) -> assignments by file name."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise JobInputError(
            {
                "assignments": "The channel assignments are not valid JSON; send an object that maps "
                'each file name to {"field": ID, "channel": "green"}.'
            }
        ) from None
    if not isinstance(raw, dict):
        raise JobInputError(
            {"assignments": 'The channel assignments must map each file name to {"field": ID, "channel": "green"}.'}
        )
    assignments = {}
    for file_name, choice in raw.items():
        if (
            not isinstance(choice, dict)
            or not isinstance(choice.get("field"), str)
            or choice.get("channel") not in (*CHANNELS, "multichannel")
        ):
            raise JobInputError(
                {
                    file_name: f"The assignment of {file_name} needs a field ID and a channel "
                    f"({', '.join(CHANNELS)} or multichannel)."
                }
            )
        assignments[file_name] = Assignment(field=choice["field"], channel=choice["channel"])
    return assignments


@contextlib.contextmanager
def request_uploads(
    files: MultiValueDict, *, field_name: str = "", assignments: str = "", paths: str = ""
) -> Iterator[list[FieldUpload]]:
    """Every field of a request; files unpacked from archives live in a folder removed on exit.
    `paths` (JSON list) gives the relative path of each file in `files`, in order (a folder upload)."""
    workdir = Path(tempfile.mkdtemp(prefix="hpaweb-upload-"))
    try:
        yield fields_from_files(
            files,
            field_name=field_name,
            assignments=parse_assignments(assignments),
            paths=parse_paths(paths, count=len(files.getlist("files"))),
            workdir=workdir,
            limits=ZipLimits.from_settings(),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def parse_paths(text: str, *, count: int) -> list[tuple[str, ...]]:
    """`["plate1/A3/blue.png", ...]` (JSON, one per uploaded file) -> each file's folder parts; empty: no folders."""
    if not text.strip():
        return [()] * count
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raw = None
    if not isinstance(raw, list) or len(raw) != count or not all(isinstance(path, str) for path in raw):
        raise JobInputError(
            {
                "paths": f"The file paths must be a JSON list of {count} relative path(s), one for each uploaded "
                'file in order, such as ["plate1/A3/blue.png"]; send them again or leave them out.'
            }
        )
    return [_folder_parts(path) for path in raw]


@dataclass(frozen=True, eq=False)
class _Named:
    """One image of the request: its folder parts, file name and file."""

    folder: tuple[str, ...]
    name: str
    file: File

    @property
    def path(self) -> str:
        return "/".join((*self.folder, self.name))


def fields_from_files(
    files: MultiValueDict,
    *,
    field_name: str,
    assignments: Mapping[str, Assignment],
    workdir: Path,
    limits: ZipLimits,
    paths: list[tuple[str, ...]] | None = None,
) -> list[FieldUpload]:
    uploads: list[FieldUpload] = []
    errors: dict[str, str] = {}
    if any(files.get(slot) for slot in (*CHANNELS, "multichannel")):
        try:
            uploads.append(single_field_upload(files, name=field_name))
        except JobInputError as exc:
            errors.update(exc.field_errors)

    loose = files.getlist("files")
    folders = paths or [()] * len(loose)
    images: list[_Named] = []
    seen: dict[str, int] = {}
    unpacked = _Unpacked(limit_bytes=limits.max_total_bytes)
    for index, (upload_file, folder) in enumerate(zip(loose, folders, strict=True)):
        name = _base_name(upload_file.name or "")
        shown = "/".join((*folder, name))
        seen[shown] = seen.get(shown, 0) + 1
        if len(upload_file.name or "") >= _MAX_FILE_NAME_CHARS:
            shown = f"{name[:40]}…"
            errors[shown] = (
                f"The file name {shown} is too long ({_MAX_FILE_NAME_CHARS} characters or more are cut off, "
                "so its field and channel are lost); rename it {ID}_{channel}.png with a field ID of at most 200 characters."
            )
        elif seen[shown] > 1:
            what = f"named {name}" if not folder else f"at the same path {shown}"
            errors[shown] = f"Two uploaded files are {what}; rename one (or remove it) so each file can be told apart."
        elif name.lower().endswith(".csv"):
            continue  # a labels CSV beside the files, read by cells.image_labels
        elif name.lower().endswith(".zip"):
            try:
                zip_folder = (*folder, _stem(name))
                images += [
                    _Named(folder=(*zip_folder, *entry_folder), name=entry_name, file=entry)
                    for entry_folder, entry_name, entry in _unpack_zip(
                        upload_file, workdir=workdir / f"zip{index}", limits=limits, unpacked=unpacked
                    )
                ]
            except JobInputError as exc:
                errors.update(exc.field_errors)
        else:
            images.append(_Named(folder=folder, name=name, file=upload_file))
    if not uploads and not loose:
        errors["upload"] = (
            "No files were uploaded; add the green and blue channels (at least) of a field, a multi-channel TIFF or a zip of fields."
        )
    groups = _FieldGroups()
    for image, assignment in _assign(images, assignments=assignments, field_name=field_name).items():
        if assignment is None:
            groups.errors[image.path] = (
                f"{image.path} is not named {{ID}}_{{channel}}.png or .tif, nor after its channel alone "
                "(blue.png); rename it, assign its channel on the upload page, or upload it as a multi-channel TIFF."
            )
        else:
            groups.add(assignment, image.file, name=image.path)
    errors.update(groups.errors)
    if errors:
        raise JobInputError(errors)
    return uploads + groups.uploads()


def _assign(
    images: list[_Named], *, assignments: Mapping[str, Assignment], field_name: str
) -> dict[_Named, Assignment | None]:
    """Each image's field and channel: the user's assignment (by path, or by name for a file without a
    folder), else its name read with its folder (see the module doc); None when nothing tells."""
    labels = _folder_labels({image.folder for image in images if image.folder})
    guessed: dict[_Named, tuple[str, str, bool]] = {}  # image -> (field ID or "", channel, from its folder)
    for image in images:
        if match := _FIELD_FILE.match(image.name):
            guessed[image] = (match[1], match[2].lower(), False)
        elif match := _BARE_CHANNEL_FILE.match(image.name):
            guessed[image] = ("", match[1].lower(), True)
        elif image.name.lower().endswith(_TIFF_EXTENSIONS):
            guessed[image] = (_stem(image.name), "multichannel", False)
    folders_of_id: dict[str, set[tuple[str, ...]]] = {}
    for image, (field_id, _, _) in guessed.items():
        if field_id:
            folders_of_id.setdefault(field_id, set()).add(image.folder)
    chosen: dict[_Named, Assignment | None] = {}
    for image in images:
        assigned = assignments.get(image.path) or (assignments.get(image.name) if not image.folder else None)
        if assigned is not None:
            chosen[image] = assigned
        elif image not in guessed:
            chosen[image] = None
        else:
            field_id, channel, bare = guessed[image]
            folder = labels.get(image.folder, "")
            if bare:
                field_id = folder or field_name.strip() or "field"
            elif folder and len(folders_of_id[field_id]) > 1:
                field_id = f"{folder}_{field_id}"
            chosen[image] = Assignment(field=field_id, channel=channel)
    return chosen


def _folder_labels(folders: set[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Each folder's name as a field ID: its last component, or as many trailing ones as tell it apart."""
    labels = {}
    for folder in folders:
        for depth in range(1, len(folder) + 1):
            suffix = folder[-depth:]
            if depth == len(folder) or not any(other != folder and other[-depth:] == suffix for other in folders):
                break
        labels[folder] = _field_id_from_folder("_".join(suffix))
    return labels


def _field_id_from_folder(name: str) -> str:
    """A folder name made into a field ID: characters outside the allowed set become '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip("._-")[:200].rstrip("-")
    return cleaned or "field"


def _folder_parts(path: str) -> tuple[str, ...]:
    """The folders of a relative path (the file's own name dropped); '.', '..' and empty parts are ignored."""
    return tuple(part for part in re.split(r"[\\/]", path)[:-1] if part not in ("", ".", ".."))


class _FieldGroups:
    """Files gathered into fields by ID, with every problem found kept for one report."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, File]] = {}
        self.multichannel: dict[str, File] = {}
        self.errors: dict[str, str] = {}

    def add(self, assignment: Assignment, upload_file: File, *, name: str | None = None) -> None:
        name = name or _base_name(upload_file.name or "")
        try:
            field_id = clean_field_name(assignment.field)
        except JobInputError as exc:
            self.errors[name] = exc.field_errors["name"]
            return
        if assignment.channel == "multichannel":
            if field_id in self.multichannel or field_id in self.channels:
                self.errors[field_id] = (
                    f"{name} and other files all claim field {field_id}; give each field its own ID."
                )
            self.multichannel[field_id] = upload_file
            return
        if field_id in self.multichannel:
            self.errors[field_id] = (
                f"Field {field_id} has both a multi-channel TIFF and channel files; keep one of them."
            )
        channels = self.channels.setdefault(field_id, {})
        if assignment.channel in channels:
            other = _base_name(channels[assignment.channel].name or "")
            self.errors[field_id] = (
                f"Both {other} and {name} hold the {assignment.channel} channel of field {field_id}; keep one of them."
            )
        channels[assignment.channel] = upload_file

    def uploads(self) -> list[FieldUpload]:
        fields = [FieldUpload(name=name, channel_files=files) for name, files in self.channels.items()]
        fields += [
            FieldUpload(name=name, multichannel_file=f)
            for name, f in self.multichannel.items()
            if name not in self.channels
        ]
        return sorted(fields, key=lambda upload: upload.name)


class _Unpacked:
    """Bytes unpacked from every archive of one request, against their common limit."""

    def __init__(self, *, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.total_bytes = 0

    def add(self, size_bytes: int) -> bool:
        """Count bytes about to be written; False once they would pass the limit."""
        self.total_bytes += size_bytes
        return self.total_bytes <= self.limit_bytes


def _unpack_zip(
    upload_file: UploadedFile, *, workdir: Path, limits: ZipLimits, unpacked: _Unpacked
) -> list[tuple[tuple[str, ...], str, File]]:
    """(folder parts, file name, closed `File`) for each image of a zip, after checking every entry; see the module doc."""
    zip_name = _base_name(upload_file.name or "archive.zip")

    def refuse(reason: str) -> JobInputError:
        return JobInputError({zip_name: f"{zip_name} was refused: {reason}"})

    upload_file.seek(0)
    try:
        archive = zipfile.ZipFile(upload_file)
    except (zipfile.BadZipFile, OSError):
        raise refuse("it is not a readable zip archive; create it again with a zip tool.") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > limits.max_entries:
            raise refuse(
                f"it holds {len(entries)} entries, more than the {limits.max_entries} allowed; split it into smaller archives."
            )
        images = []
        for entry in entries:
            problem = _entry_problem(entry, limits)
            if problem:
                raise refuse(f"the entry {entry.filename!r} {problem}")
            if not entry.is_dir() and _is_image_entry(entry.filename):
                images.append(entry)
        total = sum(entry.file_size for entry in images)
        if total > limits.max_total_bytes:
            raise refuse(
                f"it unpacks to {_size_text(total)}, more than the {_size_text(limits.max_total_bytes)} allowed; "
                "split it into smaller archives."
            )
        if not images:
            raise refuse(
                "it holds no PNG or TIFF images named {ID}_{channel}.png; put the fields' channel files in it."
            )
        return [
            (_folder_parts(entry.filename), *_extract(archive, entry, workdir / str(index), refuse, unpacked))
            for index, entry in enumerate(images)
        ]


_HAZARD_SENTENCES = {
    EntryHazard.ABSOLUTE_PATH: "has an absolute path; archives must hold relative paths only.",
    EntryHazard.CLIMBS_OUT: "points outside the archive ('..'); archives must not climb out of their folder.",
    EntryHazard.SYMBOLIC_LINK: "is a symbolic link; put the image files themselves in the archive.",
    EntryHazard.ENCRYPTED: "is encrypted; upload an archive without a password.",
}


def _entry_problem(entry: zipfile.ZipInfo, limits: ZipLimits) -> str | None:
    hazard = entry_hazard(entry)
    if hazard is not None:
        return _HAZARD_SENTENCES[hazard]
    if entry_parts(entry)[-1].lower().endswith(_ARCHIVE_EXTENSIONS):
        return "is an archive inside the archive; unpack it and put its images in the upload directly."
    if entry.file_size > limits.max_entry_bytes:
        return f"unpacks to {_size_text(entry.file_size)}, more than any accepted image; it cannot be a field channel."
    return None


def _is_image_entry(name: str) -> bool:
    """Images are read; folders, macOS metadata and other files (a CSV of labels, a README) are skipped."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or "__MACOSX" in parts or parts[-1].startswith("."):
        return False
    return parts[-1].lower().endswith(_IMAGE_EXTENSIONS)


def _extract(
    archive: zipfile.ZipFile, entry: zipfile.ZipInfo, folder: Path, refuse, unpacked: _Unpacked
) -> tuple[str, File]:
    """Copy one entry to folder/{its base name}, checking it as it inflates: it must start like an
    image, stay within its declared size (a zip can lie about it) and within the request's limit.
    A full disk is raised as it is (`OSError`, ENOSPC): that is the server's problem, not the archive's."""
    name = _base_name(entry.filename)
    folder.mkdir(parents=True)
    target = folder / name
    written = 0
    try:
        with archive.open(entry) as source, target.open("wb") as out:
            while chunk := source.read(_COPY_CHUNK_BYTES):
                if written == 0 and not chunk.startswith(_IMAGE_SIGNATURES):
                    # Not an image: keep only its start, enough for the field's check to say so.
                    out.write(chunk[:_SNIFF_BYTES])
                    break
                written += len(chunk)
                if written > entry.file_size:
                    raise refuse(f"the entry {entry.filename!r} unpacks to more bytes than it declares.")
                if not unpacked.add(len(chunk)):
                    raise refuse(
                        f"its images unpack to more than the {_size_text(unpacked.limit_bytes)} one upload may hold; "
                        "split it into smaller archives."
                    )
                out.write(chunk)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise
        raise refuse(f"the entry {entry.filename!r} cannot be unpacked ({error}); create the archive again.") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as error:
        raise refuse(f"the entry {entry.filename!r} cannot be unpacked ({error}); create the archive again.") from None
    # Closed until read, so a batch of hundreds of fields does not hold hundreds of open files.
    return name, File(None, name=str(target))


def _size_text(size_bytes: int) -> str:
    if size_bytes >= 1024**3:
        return f"{size_bytes / 1024**3:.1f} GiB"
    if size_bytes >= 1024**2:
        return f"{size_bytes / 1024**2:.0f} MiB"
    return f"{size_bytes} bytes"


def _base_name(name: str) -> str:
    """The last path component, whichever separator the client used."""
    return re.split(r"[\\/]", name)[-1]


def _stem(name: str) -> str:
    return _base_name(name).rsplit(".", 1)[0]
