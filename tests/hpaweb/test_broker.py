"""The embedded broker never hands a consumer a message that is still being written."""

import os
import threading
from queue import Empty

import pytest
from kombu import Connection

from hpaweb import broker


@pytest.fixture()
def channel(tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "store_processed": False}
    with Connection(transport=broker.Transport, transport_options=options) as connection:
        yield connection.default_channel


def test_filesystem_broker_urls_use_the_atomic_transport():
    from hpaweb.celery import app

    with app.connection_for_write("filesystem://") as connection:
        assert isinstance(connection.transport, broker.Transport)


def test_a_consumer_sees_no_message_while_it_is_being_written_and_the_whole_one_after(channel, monkeypatch):
    seen_while_writing = []
    real_replace = os.replace

    def replace_after_looking(source, destination):
        # The bytes are on disk under their partial name: a consumer must not find them yet.
        with pytest.raises(Empty):
            channel._get("jobs")
        seen_while_writing.append(os.path.basename(source))
        real_replace(source, destination)

    monkeypatch.setattr(broker.os, "replace", replace_after_looking)
    channel._put("jobs", {"body": "x" * 10_000})

    assert seen_while_writing and seen_while_writing[0].startswith(broker.PARTIAL_PREFIX)
    assert channel._get("jobs") == {"body": "x" * 10_000}
    assert os.listdir(channel.data_folder_in) == []


def test_a_failed_write_leaves_no_partial_file(channel, monkeypatch):
    def no_space(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(broker.os, "replace", no_space)
    with pytest.raises(broker.ChannelError, match="Cannot add file"):
        channel._put("jobs", {"body": "x"})
    assert os.listdir(channel.data_folder_in) == []


def test_messages_put_while_a_consumer_polls_all_arrive_once_and_whole(channel):
    count = 400
    received, errors = [], []

    def produce():
        for index in range(count):
            channel._put("jobs", {"index": index, "padding": "y" * 4096})

    def consume():
        while len(received) < count:
            try:
                received.append(channel._get("jobs")["index"])
            except Empty:
                continue
            except Exception as error:  # a torn message would land here
                errors.append(error)
                return

    producer = threading.Thread(target=produce)
    consumer = threading.Thread(target=consume)
    consumer.start()
    producer.start()
    producer.join(timeout=60)
    consumer.join(timeout=60)
    assert errors == []
    assert sorted(received) == list(range(count))
