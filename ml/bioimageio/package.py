"""Reading a bioimage.io model package: unpacking it safely and validating it with bioimageio.spec.

A package is a zip, or a folder holding `rdf.yaml` (or `bioimageio.yaml`) and the files it
names. Zips are treated as hostile, as uploads are (`cells.uploads`): entries with absolute
paths, `..`, symlinks, encryption, nested folders of too many entries or too many bytes refuse
the whole package before anything is unpacked, and unpacking stops at the size an entry
declared. The description is validated offline: every file it names must lie in the package
with the SHA-256 it declares (`known_files` with `perform_io_checks=False`), so a description
that points at a URL is refused instead of downloaded. Format 0.4 descriptions are converted to
the latest format, so the rest of the package reads one format only.

Only TorchScript and ONNX weights are ever executed; the other formats (`pytorch_state_dict`,
Keras, TensorFlow) are pickles or programs and are never loaded.
"""

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bioimageio.spec import InvalidDescr, load_description
from bioimageio.spec.model.v0_5 import ModelDescr
from bioimageio.spec.utils import open_bioimageio_yaml

from ml.archives import EntryHazard, entry_hazard

# The weight formats that are run, in the order they are preferred.
EXECUTABLE_WEIGHT_FORMATS: tuple[str, ...] = ("torchscript", "onnx")
DESCRIPTION_FILE_NAMES: tuple[str, ...] = ("rdf.yaml", "bioimageio.yaml")
_COPY_CHUNK_BYTES = 1024 * 1024
_HASH_CHUNK_BYTES = 1024 * 1024


class ModelImportError(ValueError):
    """A model package cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class PackageLimits:
    """How large a package may be: packed, per unpacked entry, unpacked in all, and in entries."""

    max_package_bytes: int = 2 * 1024**3
    max_entry_bytes: int = 2 * 1024**3
    max_total_bytes: int = 4 * 1024**3
    max_entries: int = 1000


DEFAULT_LIMITS = PackageLimits()


@dataclass(frozen=True, eq=False)
class ModelPackage:
    """A validated package: its folder, its description (latest format) and the weights that run."""

    root: Path  # the folder holding the description and every file it names
    description: ModelDescr
    source: Path  # what the user gave: a zip, a folder or a description file
    format_version: str  # the format the package was written in, before conversion
    weights_format: str  # one of EXECUTABLE_WEIGHT_FORMATS

    @property
    def name(self) -> str:
        return str(self.description.name)

    def file(self, source: object) -> Path:
        """The local path of a file the description names (all are inside the package, checked)."""
        return self.root / PurePosixPath(str(source))

    def weights_path(self) -> Path:
        return self.file(getattr(self.description.weights, self.weights_format).source)


def read_package(path: str | Path, *, workdir: str | Path, limits: PackageLimits = DEFAULT_LIMITS) -> ModelPackage:
    """Validate the package at `path` (a zip, a folder, or its `rdf.yaml`); zips unpack into `workdir`.

    Raises `ModelImportError` with a sentence when the package is unsafe, too large, not a valid
    bioimage.io model description or has no weights this product runs.
    """
    path = Path(path)
    if not path.exists():
        raise ModelImportError(f"{path} does not exist; pass a bioimage.io model zip, its folder or its rdf.yaml.")
    if path.is_file() and path.name in DESCRIPTION_FILE_NAMES:
        root, description_file = path.parent, path
    elif path.is_dir():
        root = path
        description_file = _description_file(root, source_name=path.name)
    elif zipfile.is_zipfile(path):
        root = Path(workdir) / "package"
        _unpack(path, root, limits=limits)
        description_file = _description_file(root, source_name=path.name)
    else:
        raise ModelImportError(
            f"{path.name} is neither a zip archive nor a folder nor an rdf.yaml; "
            "pass a bioimage.io model package as downloaded from bioimage.io."
        )
    _check_folder_size(root, source_name=path.name, limits=limits)
    description = _load_description(root, description_file, source_name=path.name)
    return ModelPackage(
        root=root,
        description=description,
        source=path,
        format_version=_written_format_version(description_file),
        weights_format=choose_weights_format(description, source_name=path.name),
    )


@contextlib.contextmanager
def open_package(path: str | Path, *, limits: PackageLimits = DEFAULT_LIMITS) -> Iterator[ModelPackage]:
    """`read_package` into a temporary folder that is removed on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="hpaweb-bioimageio-"))
    try:
        yield read_package(path, workdir=workdir, limits=limits)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def choose_weights_format(description: ModelDescr, *, source_name: str) -> str:
    """The first executable weights format the package has; a sentence when it has none."""
    for weights_format in EXECUTABLE_WEIGHT_FORMATS:
        if getattr(description.weights, weights_format, None) is not None:
            return weights_format
    present = [name for name, entry in description.weights if entry is not None]
    raise ModelImportError(
        f"{source_name} holds only {', '.join(present) or 'no'} weights, which this product never runs "
        "(they can execute arbitrary code); it accepts TorchScript (torchscript) and ONNX (onnx) weights only. "
        "Ask the model's authors for a package with one of these, or convert the weights yourself."
    )


def store_package(package: ModelPackage, destination: str | Path) -> Path:
    """Write the package's files as one zip `destination/{name}-{version}.zip`, atomically; its path."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    version = str(package.description.version or "1")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{package.name}-{version}").strip("-.")
    target = destination / f"{stem}.zip"
    handle, temporary = tempfile.mkstemp(dir=destination, prefix=f".{stem}-", suffix=".zip.tmp")
    try:
        with os.fdopen(handle, "wb") as out, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(package.root.rglob("*")):
                if file.is_file() and not file.is_symlink():
                    archive.write(file, file.relative_to(package.root).as_posix())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _description_file(root: Path, *, source_name: str) -> Path:
    for name in DESCRIPTION_FILE_NAMES:
        if (root / name).is_file():
            return root / name
    raise ModelImportError(
        f"{source_name} holds no rdf.yaml at its top level; a bioimage.io model package must have one there."
    )


def _unpack(archive_path: Path, root: Path, *, limits: PackageLimits) -> None:
    name = archive_path.name

    def refuse(reason: str) -> ModelImportError:
        return ModelImportError(f"{name} was refused: {reason}")

    if archive_path.stat().st_size > limits.max_package_bytes:
        raise refuse(f"it is larger than the {_size_text(limits.max_package_bytes)} a model package may be.")
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError):
        raise refuse("it is not a readable zip archive; download or create it again.") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > limits.max_entries:
            raise refuse(f"it holds {len(entries)} entries, more than the {limits.max_entries} a package may hold.")
        for entry in entries:
            problem = _entry_problem(entry, limits)
            if problem:
                raise refuse(f"the entry {entry.filename!r} {problem}")
        total = sum(entry.file_size for entry in entries)
        if total > limits.max_total_bytes:
            raise refuse(
                f"it unpacks to {_size_text(total)}, more than the {_size_text(limits.max_total_bytes)} allowed."
            )
        root.mkdir(parents=True)
        for entry in entries:
            target = root.joinpath(*PurePosixPath(entry.filename).parts)
            if entry.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with archive.open(entry) as source, target.open("wb") as out:
                while chunk := source.read(_COPY_CHUNK_BYTES):
                    written += len(chunk)
                    if written > entry.file_size:
                        raise refuse(f"the entry {entry.filename!r} unpacks to more bytes than it declares.")
                    out.write(chunk)


_HAZARD_SENTENCES = {
    EntryHazard.ABSOLUTE_PATH: "has an absolute path; a package must hold relative paths only.",
    EntryHazard.CLIMBS_OUT: "points outside the package ('..'); a package must not climb out of its folder.",
    EntryHazard.SYMBOLIC_LINK: "is a symbolic link; put the file itself in the package.",
    EntryHazard.ENCRYPTED: "is encrypted; use a package without a password.",
}


def _entry_problem(entry: zipfile.ZipInfo, limits: PackageLimits) -> str | None:
    hazard = entry_hazard(entry)
    if hazard in (EntryHazard.ABSOLUTE_PATH, EntryHazard.CLIMBS_OUT):
        return _HAZARD_SENTENCES[hazard]
    if "\\" in entry.filename:
        return "uses backslashes in its path; create the zip again with a standard zip tool."
    if hazard is not None:
        return _HAZARD_SENTENCES[hazard]
    if entry.file_size > limits.max_entry_bytes:
        return f"unpacks to {_size_text(entry.file_size)}, more than the {_size_text(limits.max_entry_bytes)} allowed."
    return None


def _check_folder_size(root: Path, *, source_name: str, limits: PackageLimits) -> None:
    files = [file for file in root.rglob("*") if file.is_file() or file.is_symlink()]
    if any(file.is_symlink() for file in files):
        raise ModelImportError(f"{source_name} was refused: it holds symbolic links; put the files themselves in it.")
    total = sum(file.stat().st_size for file in files)
    if len(files) > limits.max_entries or total > limits.max_total_bytes:
        raise ModelImportError(
            f"{source_name} was refused: it holds {len(files)} files of {_size_text(total)}, more than the "
            f"{limits.max_entries} files or {_size_text(limits.max_total_bytes)} a package may hold."
        )


def _load_description(root: Path, description_file: Path, *, source_name: str) -> ModelDescr:
    # Every file of the package with its hash: with perform_io_checks off, bioimageio.spec then
    # compares the declared hashes with these and treats any other reference (a URL) as invalid,
    # so validation never reaches the network.
    known_files = {
        file.relative_to(root).as_posix(): _sha256(file)
        for file in root.rglob("*")
        if file.is_file() and file != description_file
    }
    try:
        description = load_description(
            description_file, perform_io_checks=False, known_files=known_files, format_version="latest"
        )
    except Exception as error:  # the spec library raises many kinds for unreadable YAML
        raise ModelImportError(
            f"The rdf.yaml of {source_name} cannot be read ({first_line(error)}); fix the file or download the package again."
        ) from None
    if isinstance(description, InvalidDescr):
        weights_hint = ""
        if any(
            len(error.loc) > 1 and error.loc[0] == "weights"
            for detail in description.validation_summary.details
            for error in detail.errors
        ):
            weights_hint = (
                " Its weights must be in a known format; this product runs torchscript and onnx weights only."
            )
        raise ModelImportError(
            f"The rdf.yaml of {source_name} is not a valid bioimage.io model description: "
            f"{_validation_errors(description)}.{weights_hint} Fix the package or ask its authors for a valid one."
        )
    if not isinstance(description, ModelDescr):
        kind = getattr(description, "type", "unknown")
        raise ModelImportError(f"{source_name} describes a {kind}, not a model; pass a bioimage.io model package.")
    return description


def _validation_errors(description: InvalidDescr, *, limit: int = 3) -> str:
    errors = [error for detail in description.validation_summary.details for error in detail.errors]
    texts = [
        f"{'.'.join(map(str, error.loc)) or 'the file'}: {first_line(error.msg).removeprefix('Value error, ').rstrip('.')}"
        for error in errors[:limit]
    ]
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(texts) + more if texts else "it does not describe a model"


def _written_format_version(description_file: Path) -> str:
    """The format version the package was written in (the description itself is converted to the latest)."""
    return str(open_bioimageio_yaml(description_file).content.get("format_version", ""))


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _size_text(size_bytes: int) -> str:
    return f"{size_bytes / 1024**2:.0f} MiB" if size_bytes >= 1024**2 else f"{size_bytes} bytes"


def first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
