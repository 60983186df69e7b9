"""The embedded broker: kombu's filesystem transport, with messages that appear whole.

kombu's transport creates a message file, then locks and writes it; a consumer that lists the
folder in between moves the still-empty file away and fails to decode it, which stops the
worker ("Unrecoverable error: JSONDecodeError", celery/kombu#1551). Here a message is written
under a name no consumer reads, flushed to disk, then renamed into the queue folder: a rename
within one folder is atomic, so a consumer sees either no file or the whole message.
"""

import contextlib
import os
import uuid

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# A consumer takes only names of the form "<stamp>_<uuid>.<queue>.msg" (the part after the
# first dot must be "<queue>.msg"); this prefix and suffix match no queue.
PARTIAL_PREFIX = ".partial-"
PARTIAL_SUFFIX = ".tmp"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(filesystem.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final_path = os.path.join(self.data_folder_out, name)
        partial_path = os.path.join(self.data_folder_out, f"{PARTIAL_PREFIX}{uuid.uuid4()}{PARTIAL_SUFFIX}")
        try:
            with open(partial_path, "wb") as partial:
                partial.write(str_to_bytes(dumps(payload)))
                partial.flush()
                os.fsync(partial.fileno())
            os.replace(partial_path, final_path)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial_path)
            raise ChannelError(f"Cannot add file {final_path!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def use_atomic_filesystem_transport() -> None:
    """Makes "filesystem://" broker URLs use this transport (call before any connection opens)."""
    TRANSPORT_ALIASES["filesystem"] = "hpaweb.broker:Transport"
