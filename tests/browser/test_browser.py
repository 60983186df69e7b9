"""The product in a real browser: Debian's chromium driven by Playwright against a live server and a
real worker process. Sign in, upload a field, wait for it, open a cell, download the CSV; the run
saves screenshots of the main pages at desktop and phone widths under var/screenshots/ (or the folder
HPAWEB_SCREENSHOTS_DIR names: `make screenshots` refreshes docs/screenshots/ that way)."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cells.models import Field
from ml.constants import CHANNELS
from ml.synth import synthesize_field
from tests.browser.support import DESKTOP, PASSWORD, PHONE
from tests.browser.support import csp_violations as _csp_violations
from tests.browser.support import shot as _shot
from tests.browser.support import watch_csp as _watch_csp

# Playwright's sync API keeps an event loop in this thread; the ORM calls here are still synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

FIELD_SIZE_PX = 768


@pytest.fixture
def channel_files(tmp_path) -> list[Path]:
    """A synthetic HPA-like field as four 8-bit PNGs named {ID}_{channel}.png."""
    field = synthesize_field(np.random.default_rng(7), FIELD_SIZE_PX)
    paths = []
    for channel, plane in zip(CHANNELS, field.image, strict=True):
        path = tmp_path / f"plate1-A3_{channel}.png"
        Image.fromarray((np.clip(plane, 0, 1) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _cell_inside_its_box_centre(field: Field) -> tuple[int, int, int]:
    """(label, row, col) of a cell whose bounding-box centre lies inside it, the largest such."""
    with field.cell_labels.open("rb") as handle:
        labels = np.asarray(Image.open(handle))
    for cell in field.cells.order_by("-area_px"):
        row, col = (cell.min_row + cell.max_row) // 2, (cell.min_col + cell.max_col) // 2
        if labels[row, col] == cell.label:
            return cell.label, row, col
    pytest.fail("no cell contains the centre of its bounding box")


def _click_field_pixel(page, row: int, col: int) -> None:
    page.locator("[data-stage]").scroll_into_view_if_needed()
    box = page.locator("[data-layers]").bounding_box()
    page.mouse.click(
        box["x"] + (col + 0.5) * box["width"] / FIELD_SIZE_PX, box["y"] + (row + 0.5) * box["height"] / FIELD_SIZE_PX
    )


def test_sign_in_upload_wait_open_a_cell_and_download_the_csv(
    browser, live_server, django_user_model, channel_files, worker_process
):
    django_user_model.objects.create_user(username="biologist", password=PASSWORD)
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    csp_messages = _watch_csp(context)
    page = context.new_page()
    page.set_default_timeout(30_000)

    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    _shot(page, "sign-in-desktop")
    page.get_by_label("Username").fill("biologist")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")

    page.get_by_role("link", name="New job").first.click()
    page.get_by_label("Job name").fill("Plate 1")
    page.locator('input[name="files"]').set_input_files([str(path) for path in channel_files])
    assert page.locator("[data-field-summary]").inner_text() == "1 field: plate1-A3."
    assert page.get_by_label("Channel of plate1-A3_yellow.png").input_value() == "yellow"
    _shot(page, "upload-desktop")
    page.get_by_role("button", name="Upload and analyse").click()
    page.wait_for_url(re.compile(r".*/jobs/\d+/$"))

    # Progress updates in place (htmx); the page reloads itself once when the job is finished.
    status = page.get_by_test_id("job-status")
    status.filter(has_text=re.compile("^(done|failed|partial)$")).wait_for(timeout=240_000)
    assert status.inner_text() == "done", worker_process[1].read_text()[-3000:]
    _shot(page, "job-desktop")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Kaggle submission CSV").click()
    csv_text = Path(download_info.value.path()).read_text()
    assert csv_text.startswith("ID,ImageWidth,ImageHeight,PredictionString\nplate1-A3,768,768,")

    page.get_by_role("link", name="plate1-A3").first.click()
    page.locator('[data-viewer][data-ready="true"]').wait_for()
    field = Field.objects.get(name="plate1-A3")
    label, row, col = _cell_inside_its_box_centre(field)
    _click_field_pixel(page, row, col)
    title = page.locator("[data-cell-title]")
    assert title.inner_text() == f"Cell {label} (selected)"
    bars = page.locator("[data-cell-bars] .bar-row")
    if field.model_name:
        assert bars.count() >= 1
    else:
        assert "Not classified" in page.locator("[data-cell-bars]").inner_text()
    assert page.locator(f"#cell-row-{label}.selected").count() == 1

    # Zoom and the channel controls act on the view.
    zoom = page.locator("[data-zoom-level]")
    before = zoom.inner_text()
    page.get_by_role("button", name="Zoom in").click()
    assert zoom.inner_text() != before
    page.get_by_role("button", name="Fit").click()
    page.get_by_label("Contrast of the green channel").fill("2.5")
    page.get_by_label("Nuclei").uncheck()
    assert page.locator("[data-nucleus-outlines]").is_hidden()
    page.get_by_label("Nuclei").check()
    page.get_by_label("Contrast of the green channel").fill("1")
    _shot(page, "field-viewer-desktop")
    assert (_csp_violations(page), csp_messages) == ([], [])

    job_url = page.url.split("/fields/")[0] + f"/jobs/{field.job_id}/"
    page.goto(job_url + "gallery/")
    assert page.locator(".tile").count() >= 1 or not field.model_name
    _shot(page, "gallery-desktop")
    page.goto(f"{live_server.url}/")
    _shot(page, "jobs-desktop")
    page.goto(f"{live_server.url}/api/docs/")
    page.locator(".swagger-ui .opblock").first.wait_for()
    _shot(page, "api-docs-desktop")
    assert (_csp_violations(page), csp_messages) == ([], [])

    phone = browser.new_context(viewport=PHONE, storage_state=context.storage_state(), is_mobile=True, has_touch=True)
    phone_page = phone.new_page()
    phone_pages = (
        ("jobs", "/"),
        ("upload", "/jobs/new/"),
        ("job", job_url),
        ("field-viewer", f"/fields/{field.pk}/#cell-{label}"),
        ("gallery", job_url + "gallery/"),
        ("account", "/accounts/"),
    )
    for name, url in phone_pages:
        phone_page.goto(url if url.startswith("http") else f"{live_server.url}{url}")
        if name == "field-viewer":
            phone_page.locator('[data-viewer][data-ready="true"]').wait_for()
            assert phone_page.locator("[data-cell-title]").inner_text() == f"Cell {label} (selected)"
        if name == "account":  # with the token shown, its longest line
            phone_page.get_by_role("button", name="Make a token").click()
            phone_page.get_by_label("Your token").wait_for()
        # Nothing may stick out sideways at phone width.
        assert phone_page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), name
        _shot(phone_page, f"{name}-phone", full_page=False)  # what a phone shows first
    phone.close()
    signed_out = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    sign_in = signed_out.new_page()
    sign_in.goto(f"{live_server.url}/accounts/login/")
    assert sign_in.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert sign_in.get_by_label("Username").is_visible() and sign_in.get_by_role("button", name="Sign in").is_visible()
    signed_out.close()
    context.close()


def test_pages_raise_no_content_security_policy_violation(browser, live_server, django_user_model, channel_files):
    """Every page of a signed-in user (and the sign-in and admin pages) in chromium, with the policy on."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from cells import intake
    from cells.uploads import FieldUpload

    user = django_user_model.objects.create_user(
        username="biologist", password=PASSWORD, is_staff=True, is_superuser=True
    )
    uploads = {path.stem.rsplit("_", 1)[1]: SimpleUploadedFile(path.name, path.read_bytes()) for path in channel_files}
    job = intake.job_create(owner=user, uploads=[FieldUpload(name="plate1-A3", channel_files=uploads)], name="Plate 1")
    field = job.fields.get()
    context = browser.new_context(viewport=DESKTOP)
    csp_messages = _watch_csp(context)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{live_server.url}/accounts/login/")
    assert _csp_violations(page) == []
    page.get_by_label("Username").fill("biologist")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    pages = ["/", "/jobs/new/", f"/jobs/{job.pk}/", f"/jobs/{job.pk}/gallery/", f"/fields/{field.pk}/", "/accounts/"]
    pages += ["/accounts/password/", "/api/docs/", "/admin/", "/admin/cells/job/"]
    violations = {}
    for url in pages:
        page.goto(f"{live_server.url}{url}")
        if url == "/api/docs/":
            page.locator(".swagger-ui .opblock").first.wait_for()
        page.wait_for_load_state("networkidle")
        violations[url] = _csp_violations(page)
    page.goto(f"{live_server.url}/accounts/")
    page.get_by_role("button", name="Make a token").click()
    page.get_by_label("Your token").wait_for()
    violations["/accounts/token/"] = _csp_violations(page)
    assert {url: found for url, found in violations.items() if found} == {}
    assert csp_messages == []
    context.close()


def test_the_readme_python_example_runs_as_it_is_written(
    live_server, django_user_model, channel_files, worker_process, tmp_path
):
    """The README's API example, with this server's address and a test account, in the project's virtualenv."""
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("Submit a field and fetch the submission CSV")[1].split("```python\n")[1].split("```")[0]
    django_user_model.objects.create_user(username="me", password="my password")
    images = tmp_path / "images"
    images.mkdir()
    for path in channel_files:
        (images / path.name).write_bytes(path.read_bytes())
    script = example.replace('BASE = "http://127.0.0.1:8000"', f'BASE = "{live_server.url}"')
    assert script != example
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr + worker_process[1].read_text()[-2000:]
    assert run.stdout.startswith("done [('plate1-A3', ")
    assert (tmp_path / "submission.csv").read_text().startswith("ID,ImageWidth,ImageHeight,PredictionString\n")
