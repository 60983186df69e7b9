import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from knox import crypto as knox_crypto
from knox.models import AuthToken

from cells import intake, processing, selectors
from cells.models import Cell, Field, Job, RegisteredModel
from cells.uploads import BARE_CHANNEL_FILE_PATTERN, FieldUpload
from ml.constants import DEFAULT_MODEL_PATH
from ml.io import FIELD_FILE_PATTERN
from tests.factories import make_cell, make_field, make_job
from tests.ml.bioimageio import support

bioimageio_packages = support.bioimageio_packages  # the session's packages (a fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def test_pages_require_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_upload_page_creates_a_job_and_redirects_to_it(owner_client, channel_uploads):
    response = owner_client.post("/jobs/new/", {"segmentation_backend": "classical", **channel_uploads()})
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    page = owner_client.get(response["Location"]).content.decode()
    assert "f1" in page and 'hx-trigger="every 1s"' in page


def test_upload_page_hands_the_script_the_servers_file_name_pattern_and_channels(owner_client):
    page = owner_client.get("/jobs/new/").content.decode()
    data = json.loads(page.split('<script id="upload-data" type="application/json">')[1].split("</script>")[0])
    assert data == {
        "fieldFilePattern": FIELD_FILE_PATTERN,
        "bareChannelFilePattern": BARE_CHANNEL_FILE_PATTERN,
        "channels": ["red", "green", "blue", "yellow"],
        "requiredChannels": ["green", "blue"],
    }
    assert "(?P<" not in data["fieldFilePattern"]  # the script compiles it as a JavaScript RegExp
    assert page.index('id="upload-data"') < page.index("js/upload.js")


def test_upload_page_preselects_the_configured_segmentation_backend(owner_client, settings):
    assert '<option value="classical" selected>' in owner_client.get("/jobs/new/").content.decode()
    settings.ML_SEGMENTATION_BACKEND = "unet"
    page = owner_client.get("/jobs/new/").content.decode()
    assert '<option value="unet" selected>' in page and '<option value="classical">' in page


def test_upload_page_names_the_bad_file_and_stores_nothing(owner_client, channel_uploads):
    files = channel_uploads()
    files["green"] = SimpleUploadedFile("f1_green.png", b"not an image")
    response = owner_client.post("/jobs/new/", {"segmentation_backend": "classical", **files})
    assert response.status_code == 400
    assert "green" in response.content.decode()
    assert "nothing was stored" in response.content.decode()
    assert Job.objects.count() == 0


def test_field_page_says_plainly_when_no_trained_model_is_installed(owner, owner_client, channel_uploads, ml_settings):
    ml_settings.ML_MODEL_PATH = ""
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads())])
    field = job.fields.get()
    processing.field_process(field_id=field.pk)
    page = owner_client.get(f"/fields/{field.pk}/").content.decode()
    assert "No classifier was chosen for this job" in page
    assert owner_client.get(f"/fields/{field.pk}/preview.jpg")["Content-Type"] == "image/jpeg"


def test_progress_partial_stops_polling_when_the_job_is_finished(owner, owner_client, channel_uploads):
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads())])
    processing.field_fail(field_id=job.fields.get().pk, reason="The green channel is unreadable.")
    response = owner_client.get(f"/jobs/{job.pk}/progress/", HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert response["HX-Refresh"] == "true"
    assert "every 1s" not in page and "The green channel is unreadable." in page and "Run again" in page


def test_outsider_gets_404_for_another_users_pages(owner, outsider, client, channel_uploads):
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads())])
    client.force_login(outsider)
    field = job.fields.get()
    for url in (
        f"/jobs/{job.pk}/",
        f"/jobs/{job.pk}/progress/",
        f"/fields/{field.pk}/",
        f"/jobs/{job.pk}/submission.csv",
    ):
        assert client.get(url).status_code == 404
    jobs_page = client.get("/").content.decode()
    assert "No jobs yet" in jobs_page and f"/jobs/{job.pk}/" not in jobs_page


@pytest.fixture
def processed_field(owner, channel_uploads, ml_settings):
    """A processed 256 px field of 4 cells; cell i is most confident in class i (0.9)."""
    ml_settings.ML_MODEL_PATH = ""
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=256))])
    field = job.fields.get()
    processing.field_process(field_id=field.pk)
    for cell in field.cells.all():
        probabilities = [0.01] * 19
        probabilities[cell.label] = 0.9
        Cell.objects.filter(pk=cell.pk).update(probabilities=probabilities, top_class=cell.label, top_confidence=0.9)
    return Field.objects.get(pk=field.pk)


def _file_urls(field) -> list[str]:
    cell = field.cells.first()
    return [
        f"/fields/{field.pk}/preview.jpg",
        f"/fields/{field.pk}/images/green",
        f"/fields/{field.pk}/images/cell-ids",
        f"/fields/{field.pk}/labels/cells.png",
        f"/cells/{cell.pk}/thumbnail.jpg",
        *(f"/jobs/{field.job_id}/{name}" for name in ("submission.csv", "coco.json", "cells.csv", "labels.zip")),
    ]


def test_upload_page_accepts_a_batch_of_dropped_files_as_one_job(owner_client, channel_uploads):
    files = [
        *channel_uploads(field_id="a1", size_px=64).values(),
        *channel_uploads(field_id="a2", size_px=64, channels=("green", "blue")).values(),
    ]
    response = owner_client.post("/jobs/new/", {"segmentation_backend": "classical", "name": "batch", "files": files})
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert list(job.fields.values_list("name", flat=True)) == ["a1", "a2"]


def test_upload_by_script_gets_a_client_redirect_or_the_errors_alone(owner_client, channel_uploads):
    files = channel_uploads(size_px=64)
    response = owner_client.post(
        "/jobs/new/", {"segmentation_backend": "classical", "files": list(files.values())}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and response["HX-Redirect"] == f"/jobs/{Job.objects.get().pk}/"
    bad = SimpleUploadedFile("x1_green.png", b"not an image")
    blue = channel_uploads(field_id="x1", size_px=64)["blue"]
    response = owner_client.post(
        "/jobs/new/", {"segmentation_backend": "classical", "files": [bad, blue]}, HTTP_HX_REQUEST="true"
    )
    page = response.content.decode()
    assert response.status_code == 400 and "<html" not in page
    assert "nothing was stored" in page and "<strong>x1</strong>" in page and "green channel (x1_green.png)" in page


def test_field_page_carries_the_viewer_data_and_every_control_has_a_label(owner_client, processed_field):
    page = owner_client.get(f"/fields/{processed_field.pk}/").content.decode()
    data = json.loads(page.split('<script id="viewer-data" type="application/json">')[1].split("</script>")[0])
    assert (data["width"], data["height"], len(data["cells"])) == (256, 256, 4)
    assert sorted(data["images"]) == ["blue", "cell-ids", "cell-outlines", "green", "nucleus-outlines", "red", "yellow"]
    assert data["cells"][0]["probabilities"][1] == 0.9
    for control in re.findall(r"<(?:input|select)\b[^>]*>", page):
        if 'type="hidden"' in control:
            continue
        control_id = re.search(r'id="([^"]+)"', control)
        assert control_id and f'for="{control_id[1]}"' in page, control


def test_viewer_images_and_thumbnails_are_served_to_the_owner(owner_client, processed_field):
    for url in _file_urls(processed_field)[:5]:
        response = owner_client.get(url)
        content_type = "image/jpeg" if url.endswith((".jpg", "/green")) else "image/png"
        assert response.status_code == 200 and response["Content-Type"] == content_type, url
        assert response.getvalue()[:3] == (b"\xff\xd8\xff" if content_type == "image/jpeg" else b"\x89PN"), url
        assert response["Cache-Control"] == "private, max-age=3600"
    assert owner_client.get(f"/fields/{processed_field.pk}/images/passwords").status_code == 404


def test_gallery_filters_by_class_and_confidence_and_counts_cells_per_class(owner_client, processed_field):
    job_id = processed_field.job_id
    page = owner_client.get(f"/jobs/{job_id}/gallery/").content.decode()
    assert "4 cells" in page and page.count('class="tile"') == 4
    page = owner_client.get(f"/jobs/{job_id}/gallery/?class_index=2&min_confidence=0.5").content.decode()
    assert "1 cell showing Nucleoli" in page and page.count('class="tile"') == 1
    assert 'aria-label="Nucleoli: 1 cells"' in page and 'aria-label="Nucleoplasm: 0 cells"' in page
    cell = Cell.objects.get(field=processed_field, label=2)
    assert f'src="/cells/{cell.pk}/thumbnail.jpg"' in page


def test_job_page_links_the_gallery_and_every_export(owner_client, processed_field):
    page = owner_client.get(f"/jobs/{processed_field.job_id}/").content.decode()
    for url in (f"/jobs/{processed_field.job_id}/gallery/", *_file_urls(processed_field)[5:]):
        assert f'href="{url}"' in page


def test_job_delete_from_the_page_removes_the_job(owner_client, processed_field):
    response = owner_client.post(f"/jobs/{processed_field.job_id}/delete/")
    assert response.status_code == 302 and response["Location"] == "/"
    assert Job.objects.count() == 0


def test_account_page_makes_an_api_token(owner, owner_client):
    assert "You have no API token yet" in owner_client.get("/accounts/").content.decode()
    shown = owner_client.post("/accounts/token/").content.decode()
    key = re.search(r'id="api-token" class="mono" value="([^"]+)"', shown).group(1)
    # Only a hash is kept: the key is shown once, and later the page only says a token exists.
    assert knox_crypto.hash_token(key) == AuthToken.objects.get(user=owner).digest
    later = owner_client.get("/accounts/").content.decode()
    assert key not in later and "You have an API token that works until" in later


def test_outsider_gets_404_for_every_file_and_page_of_another_user(outsider, client, processed_field):
    client.force_login(outsider)
    urls = [*_file_urls(processed_field), f"/jobs/{processed_field.job_id}/gallery/", f"/fields/{processed_field.pk}/"]
    urls += [f"/jobs/{processed_field.job_id}/progress/", f"/fields/{processed_field.pk}/labels/nuclei.png"]
    for url in urls:
        assert client.get(url).status_code == 404, url
    processing.field_fail(field_id=processed_field.pk, reason="broken")
    assert client.post(f"/fields/{processed_field.pk}/retry/").status_code == 404
    assert client.post(f"/jobs/{processed_field.job_id}/delete/").status_code == 404
    assert Job.objects.count() == 1 and Field.objects.get().status == "failed"


def test_pages_do_not_expose_media_urls(owner_client, processed_field, settings):
    for url in (
        "/",
        f"/jobs/{processed_field.job_id}/",
        f"/fields/{processed_field.pk}/",
        f"/jobs/{processed_field.job_id}/gallery/",
    ):
        page = owner_client.get(url).content.decode()
        assert f"/{settings.MEDIA_URL}" not in page and str(processed_field.uid) not in page


def test_run_again_queues_a_failed_field_and_a_second_click_only_explains(owner_client, processed_field):
    processing.field_fail(field_id=processed_field.pk, reason="The green channel is unreadable.")
    page = owner_client.get(f"/fields/{processed_field.pk}/").content.decode()
    assert "The green channel is unreadable." in page and f'action="/fields/{processed_field.pk}/retry/"' in page

    response = owner_client.post(f"/fields/{processed_field.pk}/retry/")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{processed_field.job_id}/"
    assert Field.objects.get().status == "queued"
    response = owner_client.post(f"/fields/{processed_field.pk}/retry/", follow=True)
    assert response.status_code == 200
    assert "Field f1 was not queued again: Only a failed field can be run again." in response.content.decode()
    assert Field.objects.get().status == "queued"


class _PageAudit(HTMLParser):
    """What a page offers a phone and a screen reader: its viewport, its form controls and the
    names they get, and every address it loads or links to."""

    UNLABELLED_TYPES = {"hidden", "submit", "button", "reset", "image"}

    def __init__(self):
        super().__init__()
        self.viewport = None
        self.label_for: set[str] = set()
        self.open_labels = 0
        self.controls: list[tuple[str, dict, bool]] = []  # (tag, attributes, inside a <label>)
        self.buttons: list[list] = []  # [attributes, text]
        self.addresses: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "meta" and attributes.get("name") == "viewport":
            self.viewport = attributes.get("content")
        if tag == "label":
            self.open_labels += 1
            if attributes.get("for"):
                self.label_for.add(attributes["for"])
        if tag in ("input", "select", "textarea") and attributes.get("type") not in self.UNLABELLED_TYPES:
            self.controls.append((tag, attributes, self.open_labels > 0))
        if tag == "button":
            self.buttons.append([attributes, ""])
        for name in ("src", "href", "action", "srcset", "poster"):
            if attributes.get(name) is not None:
                self.addresses.append(attributes[name])
        self.addresses += re.findall(r"url\(([^)]*)\)", attributes.get("style") or "")

    def handle_endtag(self, tag):
        if tag == "label":
            self.open_labels -= 1

    def handle_data(self, data):
        if self.buttons:
            self.buttons[-1][1] += data

    def unlabelled(self) -> list[str]:
        missing = []
        for tag, attributes, inside_label in self.controls:
            named = inside_label or attributes.get("aria-label") or attributes.get("aria-labelledby")
            if not named and attributes.get("id") not in self.label_for:
                missing.append(f"<{tag} {attributes}>")
        missing += [
            f"<button {attributes}>"
            for attributes, text in self.buttons
            if not (text.strip() or attributes.get("aria-label"))
        ]
        return missing


def _audit(response) -> _PageAudit:
    assert response.status_code in (200, 400), response.status_code
    audit = _PageAudit()
    audit.feed(response.content.decode())
    return audit


def _is_local(address: str) -> bool:
    return not re.match(r"^\s*(?:[a-z][a-z0-9+.-]*:|//)", address, re.IGNORECASE)


def test_every_page_fits_a_phone_names_every_control_and_loads_only_local_files(
    client, owner, owner_client, processed_field, channel_uploads
):
    failed_job = intake.job_create(
        owner=owner, uploads=[FieldUpload(name="f2", channel_files=channel_uploads(size_px=64))]
    )
    failed_field = failed_job.fields.get()
    processing.field_fail(field_id=failed_field.pk, reason="broken")
    owner_client.post("/accounts/token/")
    bad_upload = {"segmentation_backend": "classical", "green": SimpleUploadedFile("f1_green.png", b"not an image")}
    job_id = processed_field.job_id
    responses = {
        url: owner_client.get(url)
        for url in (
            "/",
            "/jobs/new/",
            f"/jobs/{job_id}/",
            f"/jobs/{job_id}/gallery/",
            f"/jobs/{job_id}/gallery/?class_index=2",
            f"/fields/{processed_field.pk}/",
            f"/jobs/{failed_job.pk}/",
            f"/jobs/{failed_job.pk}/gallery/",
            f"/fields/{failed_field.pk}/",
            "/accounts/",
            "/accounts/password/",
            "/accounts/password/done/",
        )
    }
    responses["upload with errors"] = owner_client.post("/jobs/new/", bad_upload)
    client.logout()
    responses["/accounts/login/"] = client.get("/accounts/login/")
    controls = 0
    for url, response in responses.items():
        audit = _audit(response)
        assert audit.viewport == "width=device-width, initial-scale=1", url
        assert audit.unlabelled() == [], url
        assert [address for address in audit.addresses if not _is_local(address)] == [], url
        controls += len(audit.controls)
    assert controls > 30  # the audit saw the forms it was meant to check


def test_templates_and_static_files_name_no_other_site():
    roots = [
        Path(django_settings.BASE_DIR) / "templates",
        *(Path(folder) for folder in django_settings.STATICFILES_DIRS),
    ]
    # static/vendor/ holds axe-core as the npm registry ships it (browser tests only), not the app's own files.
    files = [
        path
        for root in roots
        for path in root.rglob("*")
        if path.suffix in (".html", ".css", ".js", ".svg") and "vendor" not in path.relative_to(root).parts
    ]
    assert len(files) >= 10
    for path in files:
        # An SVG file names its XML namespace, which is an identifier, not an address that is fetched.
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"(?:https?:)?//[\w-]+(?:\.[\w-]+)+[/\"')]", text), path
        assert not re.search(r"@import|fonts\.g", text), path


def test_job_field_and_gallery_pages_name_the_model_and_how_far_to_trust_it(
    owner, owner_client, channel_uploads, ml_settings
):
    ml_settings.ML_MODEL_PATH = str(DEFAULT_MODEL_PATH)
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads())])
    field = job.fields.get()
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    summary = field.classifier.summary
    for url in (f"/jobs/{job.pk}/", f"/fields/{field.pk}/", f"/jobs/{job.pk}/gallery/"):
        page = owner_client.get(url).content.decode()
        assert "hpaweb-synth-v1 v1" in page, url
        assert summary in page, url
    viewer = json.loads(
        re.search(
            r'id="viewer-data" type="application/json">(.*?)</script>',
            owner_client.get(f"/fields/{field.pk}/").content.decode(),
        ).group(1)
    )
    assert viewer["model"] == {"name": "hpaweb-synth-v1", "version": "1", "summary": summary}


def test_a_field_without_red_and_yellow_says_so_beside_its_predictions(
    owner, owner_client, channel_uploads, ml_settings
):
    ml_settings.ML_MODEL_PATH = str(DEFAULT_MODEL_PATH)
    uploads = [FieldUpload(name="f1", channel_files=channel_uploads(channels=("green", "blue")))]
    field = intake.job_create(owner=owner, uploads=uploads).fields.get()
    processing.field_process(field_id=field.pk)
    page = owner_client.get(f"/fields/{field.pk}/").content.decode()
    assert "This field has no red or yellow channel: the classifier saw blank images there" in page


def test_the_models_page_lists_the_classifiers_and_a_model_page_shows_its_card_and_per_class_ap(owner_client, settings):
    settings.ML_MODEL_PATH = str(DEFAULT_MODEL_PATH)
    page = owner_client.get("/models/").content.decode()
    assert "hpaweb-synth-v1 v1" in page and "classical" in page
    assert "Only administrators add models on this installation." in page
    model = RegisteredModel.objects.get(name="hpaweb-synth-v1")
    detail = owner_client.get(f"/models/{model.pk}/").content.decode()
    assert "Validation average precision per class" in detail
    assert detail.count('class="chart-label"') == 19
    assert "Model card" in detail


def test_an_administrator_adds_a_model_on_the_models_page_and_makes_it_the_default(
    client, django_user_model, tiny_classifier_file
):
    admin = django_user_model.objects.create_user(username="admin", password="pw", is_staff=True)
    client.force_login(admin)
    upload = SimpleUploadedFile("lab.pt", tiny_classifier_file.read_bytes())
    response = client.post("/models/", {"file": upload, "visibility": "shared", "class_mapping": ""})
    model = RegisteredModel.objects.get(name="tiny-classifier")
    assert response.status_code == 302 and response["Location"] == f"/models/{model.pk}/"
    client.post(f"/models/{model.pk}/default/")
    model.refresh_from_db()
    assert model.is_default


def test_a_refused_model_file_shows_the_reason_on_the_models_page(client, django_user_model):
    client.force_login(django_user_model.objects.create_user(username="admin", password="pw", is_staff=True))
    response = client.post("/models/", {"file": SimpleUploadedFile("x.pt", b"junk"), "visibility": "shared"})
    assert response.status_code == 400
    assert "is not an hpaweb classifier checkpoint or is damaged" in response.content.decode()


def test_an_administrator_adds_a_segmentation_pair_on_the_models_page_and_the_upload_form_offers_it(
    client, django_user_model, owner_client, bioimageio_packages, settings
):
    settings.ML_SEGMENTATION_BACKEND = "classical"
    client.force_login(django_user_model.objects.create_user(username="admin", password="pw", is_staff=True))
    pair = {
        "segmenter-nuclei_file": SimpleUploadedFile("n.zip", bioimageio_packages.nuclei_zip.read_bytes()),
        "segmenter-cell_file": SimpleUploadedFile("c.zip", bioimageio_packages.torchscript_zip.read_bytes()),
        "segmenter-name": "HPA pair",
        "segmenter-visibility": "shared",
    }
    refused = client.post("/models/", pair)
    assert refused.status_code == 400
    assert "The cell package tiny linear classifier is a classifier" in refused.content.decode()
    pair["segmenter-nuclei_file"].seek(0)
    pair["segmenter-cell_file"] = SimpleUploadedFile("c.zip", bioimageio_packages.cell_zip.read_bytes())
    response = client.post("/models/", pair)
    model = RegisteredModel.objects.get(kind="segmenter")
    assert response.status_code == 302 and response["Location"] == f"/models/{model.pk}/"
    assert f"<code>model:{model.pk}</code>" in client.get(response["Location"]).content.decode()
    page = owner_client.get("/jobs/new/").content.decode()
    options = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', page)
    assert ("classical", "classical") in options and (f"model:{model.pk}", "HPA pair (unversioned)") in options
    assert "unet" not in dict(options)  # its weights are not installed here


def test_the_gallery_shows_only_unfamiliar_cells_when_asked(owner, owner_client):
    field = make_field(job=make_job(owner=owner))
    make_cell(field=field, label=1, probabilities=[0.9] + [0.01] * 18)
    odd = make_cell(field=field, label=2, probabilities=[0.9] + [0.01] * 18)
    Cell.objects.filter(pk=odd.pk).update(unfamiliar=True, familiarity=0.001)
    Cell.objects.filter(label=1).update(unfamiliar=False, familiarity=0.5)
    page = owner_client.get(
        f"/jobs/{field.job_id}/gallery/", {"familiarity": "unfamiliar", "min_confidence": 0}
    ).content.decode()
    assert "cell 2" in page and "cell 1<" not in page and "1 cell" in page


def _zip_names(response) -> list[str]:
    import io
    import zipfile

    return sorted(zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist())


def test_crops_of_chosen_cells_come_as_png_per_channel_or_one_tiff_per_cell(owner_client, processed_field):
    import io
    import zipfile

    import numpy as np
    import tifffile

    job_id, labels = processed_field.job_id, sorted(processed_field.cells.values_list("label", flat=True))
    response = owner_client.get(f"/jobs/{job_id}/crops.zip?field={processed_field.pk}&cells={labels[0]},{labels[1]}")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    names = _zip_names(response)
    expected = [
        f"f1/cell-{label}_{suffix}.png" for label in labels[:2] for suffix in ("blue", "green", "mask", "red", "yellow")
    ]
    assert names == sorted(["crops.csv", *expected])

    response = owner_client.get(
        f"/jobs/{job_id}/crops.zip?image_format=tiff&class_index={labels[2]}&min_confidence=0.5"
    )
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == sorted(
        ["crops.csv", f"f1/cell-{labels[2]}.tif", f"f1/cell-{labels[2]}_mask.png"]
    )
    cell = processed_field.cells.get(label=labels[2])
    planes = tifffile.imread(io.BytesIO(archive.read(f"f1/cell-{labels[2]}.tif")))
    assert planes.shape == (4, cell.max_row - cell.min_row, cell.max_col - cell.min_col) and planes.dtype == np.uint8
    rows = archive.read("crops.csv").decode().splitlines()
    assert rows[0] == "field,cell_id,min_row,min_col,max_row,max_col,area_px,top_class,confidence,files"
    assert rows[1].startswith(f"f1,{labels[2]},") and len(rows) == 2


def test_crops_refuse_an_unreadable_cell_list_with_a_sentence(owner_client, processed_field):
    response = owner_client.get(f"/jobs/{processed_field.job_id}/crops.zip?cells=three")
    assert response.status_code == 400
    assert response.content.decode() == (
        "The crops could not be chosen: List the cells as numbers separated by commas, such as 3,7,12."
    )


def test_one_zip_holds_everything_the_job_produced(owner_client, processed_field):
    response = owner_client.get(f"/jobs/{processed_field.job_id}/all.zip")
    assert response.status_code == 200 and response["Content-Disposition"].endswith('-all.zip"')
    names = _zip_names(response)
    for name in ("submission.csv", "coco.json", "cells.csv", "labels/manifest.json", "labels/f1_cells.png"):
        assert name in names
    assert "crops/crops.csv" in names and sum(name.startswith("crops/f1/") for name in names) == 5 * 4


def test_a_field_has_its_own_cells_csv(owner_client, processed_field):
    response = owner_client.get(f"/fields/{processed_field.pk}/cells.csv")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert response["Content-Disposition"].endswith('-f1-cells.csv"')
    assert (
        lines[0].startswith("field,cell_id,")
        and len(lines) == 1 + 4
        and all(line.startswith("f1,") for line in lines[1:])
    )


def test_the_favicon_is_linked_on_every_page_and_favicon_ico_never_404s(client, owner_client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")
    assert '<link rel="icon" href="/static/favicon.svg"' in owner_client.get("/").content.decode()
    assert '<link rel="icon" href="/static/favicon.svg"' in owner_client.get("/api/docs/").content.decode()


def test_the_api_docs_link_back_to_the_app(owner_client):
    page = owner_client.get("/api/docs/").content.decode()
    assert '<html lang="en">' in page and '<a href="/">&larr; Back to hpaweb</a>' in page


def test_a_failed_field_shows_failed_everywhere_and_no_full_progress_bar(owner, owner_client):
    job = make_job(owner=owner)
    field = make_field(job=job, status=Field.Status.FAILED, progress=0.4, error="The blue channel is unreadable.")
    for url in (f"/jobs/{job.pk}/", f"/jobs/{job.pk}/progress/"):
        page = owner_client.get(url).content.decode()
        row = page.split(f'id="field-{field.pk}"')[1].split("</tr>")[0]
        assert 'class="field-row-failed"' in page and 'data-testid="field-failed">stopped<' in row
        assert "<progress" not in row and 'data-testid="job-failed"' in page
    page = owner_client.get(f"/fields/{field.pk}/").content.decode()
    assert 'class="error-box field-failed" role="alert"' in page and "The blue channel is unreadable." in page


def test_a_running_job_estimates_the_time_left_from_its_finished_fields(owner, owner_client):
    import datetime

    from django.utils import timezone

    job = make_job(owner=owner)
    started = timezone.now() - datetime.timedelta(seconds=100)
    make_field(job=job, name="a", status=Field.Status.DONE, progress=1.0, started_at=started,
               finished_at=started + datetime.timedelta(seconds=30))  # fmt: skip
    make_field(job=job, name="b", status=Field.Status.SEGMENTING, progress=0.5)
    make_field(job=job, name="c")
    # 30 s a field, 1.5 fields of work left, one field running at a time: 45 s.
    assert selectors.job_progress(job=job).seconds_left == 45.0
    page = owner_client.get(f"/jobs/{job.pk}/progress/").content.decode()
    assert '<span class="time-left" data-testid="time-left">· about 45 s left</span>' in page


def test_the_field_page_shows_the_field_level_prediction_and_a_sortable_cell_table(owner_client, processed_field):
    Field.objects.filter(pk=processed_field.pk).update(image_probabilities=[0.8] + [0.05] * 17 + [0.3])
    page = owner_client.get(f"/fields/{processed_field.pk}/").content.decode()
    prediction = page.split('data-testid="field-prediction"')[1].split("</section>")[0]
    assert re.findall(r'<span class="bar-label">([^<]+)</span>', prediction) == ["Nucleoplasm", "Negative"]
    for key in ("label", "area", "class", "confidence"):
        assert f'data-sort="{key}"' in page
    assert f'href="/jobs/{processed_field.job_id}/crops.zip?field={processed_field.pk}&amp;image_format=png"' in page


def test_the_api_downloads_crops_and_the_whole_job(owner_api, processed_field, outsider_api):
    labels = sorted(processed_field.cells.values_list("label", flat=True))
    url = f"/api/jobs/{processed_field.job_id}/crops.zip?field={processed_field.pk}&cells={labels[0]}&image_format=tiff"
    response = owner_api.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert _zip_names(response) == sorted(["crops.csv", f"f1/cell-{labels[0]}.tif", f"f1/cell-{labels[0]}_mask.png"])
    assert owner_api.get(url.replace("tiff", "jpeg")).status_code == 400
    assert outsider_api.get(url).status_code == 404
    archive = owner_api.get(f"/api/jobs/{processed_field.job_id}/all.zip")
    assert archive.status_code == 200 and "coco.json" in _zip_names(archive)
