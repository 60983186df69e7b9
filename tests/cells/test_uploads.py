import io
import json
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.datastructures import MultiValueDict

from cells import intake
from cells.models import Job
from cells.uploads import (
    JobInputError,
    ZipLimits,
    clean_field_name,
    field_name_from_files,
    parse_assignments,
    request_uploads,
    single_field_upload,
)
from ml.io import find_fields
from tests.factories import field_arrays, field_pngs

SIZE_PX = 64


def _zip(entries: dict[str, bytes], *, infos: tuple[zipfile.ZipInfo, ...] = ()) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for info in infos:
            archive.writestr(info, b"target")
    return SimpleUploadedFile("batch.zip", buffer.getvalue(), content_type="application/zip")


def _kaggle_entries(
    field_id: str, *, folder: str = "", channels=("red", "green", "blue", "yellow")
) -> dict[str, bytes]:
    pngs = field_pngs(size_px=SIZE_PX)
    return {f"{folder}{field_id}_{channel}.png": pngs[channel] for channel in channels}


def _files(*uploads: SimpleUploadedFile, **slots: SimpleUploadedFile) -> MultiValueDict:
    files = MultiValueDict({"files": list(uploads)})
    for name, upload in slots.items():
        files[name] = upload
    return files


def _loose(field_id: str, channels=("green", "blue")) -> list[SimpleUploadedFile]:
    pngs = field_pngs(size_px=SIZE_PX)
    return [SimpleUploadedFile(f"{field_id}_{channel}.png", pngs[channel]) for channel in channels]


def _fields(uploads) -> dict[str, list[str]]:
    return {upload.name: sorted(upload.channel_files) or ["multichannel"] for upload in uploads}


def _refusal(files: MultiValueDict, **kwargs) -> dict[str, str]:
    with pytest.raises(JobInputError) as excinfo, request_uploads(files, **kwargs):
        pass
    return excinfo.value.field_errors


def test_loose_files_are_grouped_into_fields_by_their_suffix():
    with request_uploads(_files(*_loose("a1", ("red", "green", "blue")), *_loose("b2"))) as uploads:
        assert _fields(uploads) == {"a1": ["blue", "green", "red"], "b2": ["blue", "green"]}


def test_assignments_name_the_field_and_channel_of_files_named_otherwise():
    pngs = field_pngs(size_px=SIZE_PX)
    files = _files(SimpleUploadedFile("scan 1.png", pngs["green"]), SimpleUploadedFile("scan 2.png", pngs["blue"]))
    assignments = (
        '{"scan 1.png": {"field": "A1", "channel": "green"}, "scan 2.png": {"field": "A1", "channel": "blue"}}'
    )
    with request_uploads(files, assignments=assignments) as uploads:
        assert _fields(uploads) == {"A1": ["blue", "green"]}
        assert uploads[0].channel_files["green"].name == "scan 1.png"


def test_a_file_without_channel_suffix_or_assignment_is_named_in_the_error():
    errors = _refusal(_files(*_loose("a1"), SimpleUploadedFile("notes.png", b"x")))
    assert list(errors) == ["notes.png"]
    assert "ID}_{channel}" in errors["notes.png"] and "assign its channel" in errors["notes.png"]


def test_two_files_for_one_channel_of_a_field_are_refused():
    pngs = field_pngs(size_px=SIZE_PX)
    files = _files(SimpleUploadedFile("a1_green.png", pngs["green"]), SimpleUploadedFile("a1_GREEN.tif", pngs["green"]))
    assert _refusal(files) == {
        "a1": "Both a1_green.png and a1_GREEN.tif hold the green channel of field a1; keep one of them."
    }


def test_assignments_that_are_not_json_say_what_to_send():
    with pytest.raises(JobInputError) as excinfo:
        parse_assignments("{not json")
    assert "not valid JSON" in excinfo.value.field_errors["assignments"]


def test_a_loose_tiff_without_suffix_is_one_multichannel_field():
    buffer = io.BytesIO()
    planes = np.stack([field_arrays(size_px=SIZE_PX)[c] for c in ("red", "green", "blue", "yellow")])
    tifffile.imwrite(buffer, planes, photometric="minisblack")
    with request_uploads(_files(SimpleUploadedFile("plate7-A3.tif", buffer.getvalue()))) as uploads:
        assert _fields(uploads) == {"plate7-A3": ["multichannel"]}


def test_zip_in_kaggle_layout_gives_every_field_at_any_depth_and_skips_other_files():
    entries = {
        **_kaggle_entries("f1", folder="train/"),
        **_kaggle_entries("f2", folder="train/deeper/", channels=("green", "blue")),
        "train.csv": b"ID,Label\nf1,0\n",
        "__MACOSX/train/._f1_green.png": b"junk",
        "train/": b"",
    }
    with request_uploads(_files(_zip(entries))) as uploads:
        assert _fields(uploads) == {"f1": ["blue", "green", "red", "yellow"], "f2": ["blue", "green"]}
        green = uploads[0].channel_files["green"]
        # Unpacked under their base names, and closed until read so a batch holds few open files.
        assert Path(green.name).name == "f1_green.png" and green.closed
        workdir = Path(green.name).parents[2]
        assert workdir.is_dir()
    assert not workdir.exists()


@pytest.mark.parametrize(
    ("entry_name", "reason"),
    [
        ("../escape_green.png", "points outside the archive"),
        ("fields/../../escape_green.png", "points outside the archive"),
        ("/etc/f1_green.png", "absolute path"),
        ("C:\\data\\f1_green.png", "absolute path"),
        ("inner/more.zip", "archive inside the archive"),
    ],
)
def test_hostile_zip_entries_refuse_the_whole_zip(entry_name, reason):
    errors = _refusal(_files(_zip({**_kaggle_entries("f1"), entry_name: b"data"})))
    assert list(errors) == ["batch.zip"]
    assert errors["batch.zip"].startswith("batch.zip was refused: the entry") and reason in errors["batch.zip"]


def test_a_symlink_in_a_zip_refuses_it():
    link = zipfile.ZipInfo("f1_red.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    errors = _refusal(_files(_zip(_kaggle_entries("f1", channels=("green", "blue")), infos=(link,))))
    assert "symbolic link" in errors["batch.zip"]


def test_a_zip_with_too_many_entries_is_refused(settings):
    settings.HPAWEB_ZIP_MAX_ENTRIES = 3
    errors = _refusal(_files(_zip(_kaggle_entries("f1"))))
    assert errors == {
        "batch.zip": "batch.zip was refused: it holds 4 entries, more than the 3 allowed; split it into smaller archives."
    }


def test_a_zip_unpacking_beyond_the_total_limit_is_refused_before_unpacking(settings, tmp_path):
    settings.HPAWEB_ZIP_MAX_BYTES = 1000
    errors = _refusal(_files(_zip(_kaggle_entries("f1"))))
    assert errors["batch.zip"].endswith("more than the 1000 bytes allowed; split it into smaller archives.")


def test_a_zip_bomb_entry_larger_than_any_image_is_refused(settings):
    settings.HPAWEB_MAX_SIDE_PX = 64  # the largest image is then about 1 MiB
    bomb = _zip({"f1_green.png": bytes(50 * 1024**2), **_kaggle_entries("f1", channels=("blue",))})
    assert len(bomb) < 1024**2  # it compresses to almost nothing
    errors = _refusal(_files(bomb))
    assert "unpacks to 50 MiB, more than any accepted image" in errors["batch.zip"]


def test_a_file_that_is_not_a_zip_is_refused_by_name():
    errors = _refusal(_files(SimpleUploadedFile("batch.zip", b"PK not really")))
    assert errors == {
        "batch.zip": "batch.zip was refused: it is not a readable zip archive; create it again with a zip tool."
    }


@pytest.mark.django_db
def test_a_zip_batch_becomes_one_job_with_a_field_each(owner):
    entries = {**_kaggle_entries("f1"), **_kaggle_entries("f2", folder="x/")}
    with request_uploads(_files(_zip(entries))) as uploads:
        job = intake.job_create(owner=owner, uploads=uploads, name="batch")
    assert list(job.fields.values_list("name", "width", "status")) == [("f1", 64, "queued"), ("f2", 64, "queued")]
    with job.fields.get(name="f2").green.open("rb") as handle:
        assert handle.read() == entries["x/f2_green.png"]


@pytest.mark.django_db
def test_a_zip_with_one_bad_field_stores_nothing_and_names_every_bad_file(owner, isolated_media):
    entries = {**_kaggle_entries("f1"), **_kaggle_entries("f2")}
    entries["f2_green.png"] = b"not an image"
    entries["f2_red.png"] = b"\x89PNG\r\n\x1a\n broken"
    with pytest.raises(JobInputError) as excinfo, request_uploads(_files(_zip(entries))) as uploads:
        intake.job_create(owner=owner, uploads=uploads)
    assert list(excinfo.value.field_errors) == ["f2"]
    reason = excinfo.value.field_errors["f2"]
    assert "red channel (f2_red.png)" in reason and "green channel (f2_green.png)" in reason
    assert Job.objects.count() == 0
    assert not any(path.is_file() for path in Path(isolated_media).rglob("*"))


def test_a_zip_entry_holding_more_than_it_declares_is_refused(settings):
    settings.HPAWEB_MAX_SIDE_PX = 64  # the largest image is then about 1 MiB
    bomb = _zip({"f1_green.png": bytes(50 * 1024**2), **_kaggle_entries("f1", channels=("blue",))})
    data = bytearray(bomb.read())
    # The central directory is what the size checks read; make it claim 1000 bytes for the 50 MiB entry.
    record = data.index(b"PK\x01\x02")
    assert data[record + 46 : record + 46 + len("f1_green.png")] == b"f1_green.png"
    data[record + 24 : record + 28] = (1000).to_bytes(4, "little")
    errors = _refusal(_files(SimpleUploadedFile("batch.zip", bytes(data))))
    assert list(errors) == ["batch.zip"]
    # Unpacking stops at the declared size, where the checksum no longer matches.
    assert errors["batch.zip"].startswith(
        "batch.zip was refused: the entry 'f1_green.png' cannot be unpacked (Bad CRC-32"
    )
    assert errors["batch.zip"].endswith("create the archive again.")


def test_files_are_grouped_by_the_same_file_name_pattern_as_ml_io_reads_folders(tmp_path):
    names = [
        "A1_green.png",
        "A1_BLUE.TIF",
        "plate-2_red.tiff",
        "plate-2_green.png",
        "plate-2_blue.png",
        "x_y_yellow.png",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    folder = {field_id: sorted(channels) for field_id, channels in find_fields(tmp_path).items()}
    # Grouping reads names only; the pixels are checked when the job is created.
    with request_uploads(_files(*(SimpleUploadedFile(name, b"") for name in names))) as uploads:
        assert (
            _fields(uploads)
            == folder
            == {"A1": ["blue", "green"], "plate-2": ["blue", "green", "red"], "x_y": ["yellow"]}
        )


def test_field_name_from_files_is_the_id_they_share_or_none():
    assert field_name_from_files([SimpleUploadedFile(n, b"") for n in ("p1-A3_green.png", "p1-A3_blue.tif")]) == "p1-A3"
    assert field_name_from_files([SimpleUploadedFile(n, b"") for n in ("a_green.png", "b_blue.png")]) is None
    assert field_name_from_files([SimpleUploadedFile("a_purple.png", b"")]) is None


def test_job_input_error_keeps_every_reason_by_field_and_says_each_as_a_message():
    error = JobInputError({"a1": "The blue channel is missing.", "a2": "Two fields share this name."})
    assert error.field_errors == {"a1": "The blue channel is missing.", "a2": "Two fields share this name."}
    assert error.messages == ["a1: The blue channel is missing.", "a2: Two fields share this name."]


def test_a_single_field_from_the_channel_slots_is_named_after_its_files():
    pngs = field_pngs(size_px=SIZE_PX)
    files = {
        "green": SimpleUploadedFile("B7_green.png", pngs["green"]),
        "blue": SimpleUploadedFile("B7_blue.png", pngs["blue"]),
    }
    upload = single_field_upload(files)
    assert (upload.name, sorted(upload.channel_files), upload.multichannel_file) == ("B7", ["blue", "green"], None)
    assert single_field_upload(files, name="chosen").name == "chosen"


def test_a_field_id_with_a_character_outside_the_allowed_set_is_refused():
    with pytest.raises(JobInputError) as excinfo:
        clean_field_name("../etc")
    assert excinfo.value.field_errors == {
        "name": "The field ID '../etc' is not allowed: a field ID may hold letters, digits, '.', '_' and '-' only "
        "(at most 200), and must start with a letter or digit."
    }


def test_zip_limits_follow_the_settings_and_the_largest_accepted_image(settings):
    settings.HPAWEB_MAX_SIDE_PX = 64
    settings.HPAWEB_ZIP_MAX_ENTRIES = 7
    settings.HPAWEB_ZIP_MAX_BYTES = 1000
    # A 4-plane 16-bit TIFF of 64 x 64 px, and 1 MiB for its headers.
    assert ZipLimits.from_settings() == ZipLimits(
        max_entries=7, max_total_bytes=1000, max_entry_bytes=4 * 2 * 64 * 64 + 1024**2
    )


def _bare(folder_files: dict[str, tuple[str, ...]]) -> tuple[MultiValueDict, str]:
    """Files named blue.png, green.png ... in folders, and the JSON `paths` a folder upload sends with them."""
    pngs = field_pngs(size_px=SIZE_PX)
    uploads, paths = [], []
    for folder, channels in folder_files.items():
        for channel in channels:
            uploads.append(SimpleUploadedFile(f"{channel}.png", pngs[channel]))
            paths.append(f"{folder}/{channel}.png")
    return _files(*uploads), json.dumps(paths)


def test_a_folder_upload_makes_one_field_per_folder_named_after_it():
    files, paths = _bare({"scan/A3": ("red", "green", "blue", "yellow"), "scan/B4": ("green", "blue")})
    with request_uploads(files, paths=paths) as uploads:
        assert _fields(uploads) == {"A3": ["blue", "green", "red", "yellow"], "B4": ["blue", "green"]}


def test_folders_of_the_same_name_are_told_apart_by_their_parents():
    files, paths = _bare({"plate1/A3": ("green", "blue"), "plate2/A3": ("green", "blue")})
    with request_uploads(files, paths=paths) as uploads:
        assert _fields(uploads) == {"plate1_A3": ["blue", "green"], "plate2_A3": ["blue", "green"]}


def test_named_files_of_the_same_id_in_two_folders_become_two_fields():
    pngs = field_pngs(size_px=SIZE_PX)
    uploads = [SimpleUploadedFile(f"f1_{channel}.png", pngs[channel]) for channel in ("green", "blue")] * 2
    paths = json.dumps(["day1/f1_green.png", "day1/f1_blue.png", "day2/f1_green.png", "day2/f1_blue.png"])
    with request_uploads(_files(*uploads), paths=paths) as uploads:
        assert _fields(uploads) == {"day1_f1": ["blue", "green"], "day2_f1": ["blue", "green"]}


def test_a_bare_channel_file_without_a_folder_takes_the_field_id_given():
    pngs = field_pngs(size_px=SIZE_PX)
    files = _files(*(SimpleUploadedFile(f"{channel}.png", pngs[channel]) for channel in ("green", "blue")))
    with request_uploads(files, field_name="well-7") as uploads:
        assert _fields(uploads) == {"well-7": ["blue", "green"]}


def test_the_same_relative_path_twice_is_refused_not_replaced():
    files, paths = _bare({"A3": ("green", "blue", "blue")})
    assert _refusal(files, paths=paths) == {
        "A3/blue.png": "Two uploaded files are at the same path A3/blue.png; rename one (or remove it) so each file "
        "can be told apart."
    }


def test_paths_that_do_not_match_the_files_are_refused_with_a_sentence():
    files, _ = _bare({"A3": ("green", "blue")})
    assert _refusal(files, paths='["A3/green.png"]') == {
        "paths": "The file paths must be a JSON list of 2 relative path(s), one for each uploaded file in order, "
        'such as ["plate1/A3/blue.png"]; send them again or leave them out.'
    }


def test_folders_inside_a_zip_name_the_fields_and_a_root_level_field_takes_the_zip_name():
    pngs = field_pngs(size_px=SIZE_PX)
    entries = {f"{folder}/{channel}.png": pngs[channel] for folder in ("A3", "B4") for channel in ("green", "blue")}
    with request_uploads(_files(_zip(entries))) as uploads:
        assert _fields(uploads) == {"A3": ["blue", "green"], "B4": ["blue", "green"]}
    with request_uploads(_files(_zip({f"{c}.png": pngs[c] for c in ("green", "blue")}))) as uploads:
        assert _fields(uploads) == {"batch": ["blue", "green"]}


def test_an_assignment_by_relative_path_names_one_of_two_files_of_the_same_name():
    pngs = field_pngs(size_px=SIZE_PX)
    files = _files(*(SimpleUploadedFile("scan.png", pngs[channel]) for channel in ("green", "blue")))
    paths = json.dumps(["A3/scan.png", "A3/sub/scan.png"])
    assignments = json.dumps({"A3/scan.png": {"field": "A3", "channel": "green"}})
    assert _refusal(files, paths=paths, assignments=assignments) == {
        "A3/sub/scan.png": "A3/sub/scan.png is not named {ID}_{channel}.png or .tif, nor after its channel alone "
        "(blue.png); rename it, assign its channel on the upload page, or upload it as a multi-channel TIFF."
    }
    both = json.dumps(
        {"A3/scan.png": {"field": "A3", "channel": "green"}, "A3/sub/scan.png": {"field": "A3", "channel": "blue"}}
    )
    with request_uploads(files, paths=paths, assignments=both) as uploads:
        assert _fields(uploads) == {"A3": ["blue", "green"]}
