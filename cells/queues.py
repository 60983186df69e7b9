"""Which Celery queue each task goes to, so GPU and CPU workers can be scaled apart.

Queues are named after `CELERY_QUEUE` (default `hpaweb`):
- `hpaweb-gpu`: fields segmented by a network (the `unet` backend, bioimage.io packages) and
  classification alone (a finished field run with another model);
- `hpaweb-cpu`: fields segmented by the classical backend (their classifier is small enough for
  a CPU: about 1,900 cells/s on two cores), and upkeep such as the sweeper;
- `hpaweb-training`: training jobs.
A worker started without `-Q` (as `make run` starts one) takes every queue; a deployment gives its
GPU workers `-Q hpaweb-gpu,hpaweb-training` and its CPU workers `-Q hpaweb-cpu` (deploy/k8s).
"""

from django.conf import settings

from cells.models import Field

# Backends that run no network and so need no GPU.
NETWORK_FREE_BACKENDS = ("classical",)


def queue_names() -> dict[str, str]:
    """kind ("cpu", "gpu", "training") -> queue name."""
    return dict(settings.HPAWEB_QUEUES)


def field_queue(*, segmentation_backend: str) -> str:
    kind = "cpu" if segmentation_backend in NETWORK_FREE_BACKENDS else "gpu"
    return settings.HPAWEB_QUEUES[kind]


def route_task(name, args, kwargs, options, task=None, **kw) -> dict | None:
    """Celery's router (`CELERY_TASK_ROUTES`): the queue of a task about to be sent."""
    if name == "cells.tasks.process_field":
        field_id = args[0] if args else kwargs["field_id"]
        backend = Field.objects.filter(pk=field_id).values_list("job__segmentation_backend", flat=True).first()
        return {"queue": field_queue(segmentation_backend=backend or NETWORK_FREE_BACKENDS[0])}
    if name == "cells.tasks.classify_field":
        return {"queue": settings.HPAWEB_QUEUES["gpu"]}
    if name == "cells.tasks.train_classifier":
        return {"queue": settings.HPAWEB_QUEUES["training"]}
    if name == "cells.tasks.sweep_fields":
        return {"queue": settings.HPAWEB_QUEUES["cpu"]}
    return None
