"""What makes a zip entry unsafe to unpack, for every reader of zips (uploads, model packages).

Each reader words the refusal for its users; what counts as a hazard is decided here once.
"""

import re
import stat
import zipfile
from enum import Enum


class EntryHazard(Enum):
    ABSOLUTE_PATH = "absolute path"
    CLIMBS_OUT = "climbs out with '..'"
    SYMBOLIC_LINK = "symbolic link"
    ENCRYPTED = "encrypted"


def entry_parts(entry: zipfile.ZipInfo) -> list[str]:
    """The entry's path split on either separator (zips made on Windows may use backslashes)."""
    return re.split(r"[\\/]", entry.filename)


def entry_hazard(entry: zipfile.ZipInfo) -> EntryHazard | None:
    """The first hazard of unpacking `entry` as it is named and flagged, or None."""
    name = entry.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return EntryHazard.ABSOLUTE_PATH
    if ".." in entry_parts(entry):
        return EntryHazard.CLIMBS_OUT
    if stat.S_ISLNK(entry.external_attr >> 16):
        return EntryHazard.SYMBOLIC_LINK
    if entry.flag_bits & 0x1:
        return EntryHazard.ENCRYPTED
    return None
