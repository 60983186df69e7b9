import stat
import zipfile

import pytest

from ml.archives import EntryHazard, entry_hazard, entry_parts


def entry(name: str, *, symlink: bool = False, encrypted: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    if symlink:
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    if encrypted:
        info.flag_bits |= 0x1
    return info


@pytest.mark.parametrize(
    ("info", "hazard"),
    [
        (entry("plate/A1_green.png"), None),
        (entry("/etc/passwd"), EntryHazard.ABSOLUTE_PATH),
        (entry("\\\\server\\share.png"), EntryHazard.ABSOLUTE_PATH),
        (entry("C:/fields/A1_green.png"), EntryHazard.ABSOLUTE_PATH),
        (entry("fields/../../outside.png"), EntryHazard.CLIMBS_OUT),
        (entry("fields\\..\\outside.png"), EntryHazard.CLIMBS_OUT),
        (entry("link.png", symlink=True), EntryHazard.SYMBOLIC_LINK),
        (entry("secret.png", encrypted=True), EntryHazard.ENCRYPTED),
    ],
)
def test_entry_hazard_names_the_first_reason_not_to_unpack_an_entry(info, hazard):
    assert entry_hazard(info) is hazard


def test_entry_parts_split_on_either_separator():
    assert entry_parts(entry("a\\b/c.png")) == ["a", "b", "c.png"]
