"""Routing: network segmentation and classification alone to the GPU queue, classical fields and upkeep to the CPU queue."""

import pytest

from cells import queues
from cells.tasks import classify_field, process_field, sweep_fields
from hpaweb.celery import app
from tests.factories import make_field, make_job

pytestmark = pytest.mark.django_db


def routed_queue(task, *args) -> str:
    """The queue Celery's router picks for `task(*args)` (what `delay` would send it to)."""
    return app.amqp.router.route({}, task.name, args, {})["queue"].name


def test_queues_are_named_after_the_deployments_queue(settings):
    base = settings.CELERY_TASK_DEFAULT_QUEUE
    assert queues.queue_names() == {"cpu": f"{base}-cpu", "gpu": f"{base}-gpu", "training": f"{base}-training"}
    assert [queue.name for queue in app.conf.task_queues] == [base, f"{base}-cpu", f"{base}-gpu", f"{base}-training"]


def test_a_classical_field_goes_to_the_cpu_queue_and_a_network_segmented_field_to_the_gpu_queue(owner, settings):
    classical = make_field(job=make_job(owner=owner, segmentation_backend="classical"), name="a")
    network = make_field(job=make_job(owner=owner, segmentation_backend="unet"), name="b")
    package_pair = make_field(job=make_job(owner=owner, segmentation_backend="model:7"), name="c")
    assert routed_queue(process_field, classical.pk) == settings.HPAWEB_QUEUES["cpu"]
    assert routed_queue(process_field, network.pk) == settings.HPAWEB_QUEUES["gpu"]
    assert routed_queue(process_field, package_pair.pk) == settings.HPAWEB_QUEUES["gpu"]


def test_classification_alone_goes_to_the_gpu_queue_and_the_sweeper_to_the_cpu_queue(settings):
    assert routed_queue(classify_field, 1, 2) == settings.HPAWEB_QUEUES["gpu"]
    assert routed_queue(sweep_fields) == settings.HPAWEB_QUEUES["cpu"]
