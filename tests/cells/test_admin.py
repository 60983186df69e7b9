import pytest

from cells import intake, processing
from cells.models import Cell
from cells.uploads import FieldUpload

pytestmark = pytest.mark.django_db


def test_admin_lists_and_opens_jobs_fields_and_cells(admin_client, owner, channel_uploads, ml_settings):
    ml_settings.ML_MODEL_PATH = ""
    job = intake.job_create(
        owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=256))], name="plate 7"
    )
    field = job.fields.get()
    processing.field_process(field_id=field.pk)
    cell = Cell.objects.filter(field=field).first()
    for model, pk, text in (
        ("job", job.pk, "plate 7"),
        ("field", field.pk, "f1"),
        ("cell", cell.pk, str(cell.area_px)),
    ):
        listing = admin_client.get(f"/admin/cells/{model}/")
        assert listing.status_code == 200 and text in listing.content.decode(), model
        assert admin_client.get(f"/admin/cells/{model}/{pk}/change/").status_code == 200, model
    assert "plate 7" in admin_client.get("/admin/cells/job/?q=owner").content.decode()
    assert "plate 7" not in admin_client.get("/admin/cells/job/?q=somebody-else").content.decode()


def test_admin_is_closed_to_users_who_are_not_staff(client, owner):
    client.force_login(owner)
    response = client.get("/admin/cells/job/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
