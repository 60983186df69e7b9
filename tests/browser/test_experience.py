"""The browser experience at a laptop's (1440 x 900) and a phone's (390 x 844) size: axe-core on every page
with no serious or critical violation, folder uploads, failed fields, the viewer's views (fit, outline and
class legends, filters, numbers, grey view and levels, scale bar, keys, the phone's cell sheet), the
sortable cell table, crops and the one-zip export. Screenshots of each go under var/screenshots/."""

import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from cells import intake, processing
from cells.models import Cell, CellPrediction, Field, FieldPrediction, Job, RegisteredModel
from cells.uploads import FieldUpload
from ml.constants import CHANNELS
from ml.synth import synthesize_field
from tests.browser.support import (
    DESKTOP,
    PASSWORD,
    PHONE,
    SCREENSHOTS,
    axe_serious,
    csp_violations,
    shot,
    sign_in,
    wait_until,
    watch_csp,
)

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FIELD_SIZE_PX = 512
LONG_NAME = "experiment-2026-11-30-U2OS-fibroblasts-plate1-well-B4-site-7"


def _pngs(seed: int) -> dict[str, bytes]:
    field = synthesize_field(np.random.default_rng(seed), FIELD_SIZE_PX)
    pngs = {}
    for channel, plane in zip(CHANNELS, field.image, strict=True):
        buffer = io.BytesIO()
        Image.fromarray((np.clip(plane, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
        pngs[channel] = buffer.getvalue()
    return pngs


def _uploads(name: str, seed: int) -> FieldUpload:
    files = {channel: SimpleUploadedFile(f"{name}_{channel}.png", data) for channel, data in _pngs(seed).items()}
    return FieldUpload(name=name, channel_files=files)


def _second_model_predictions(job: Job) -> RegisteredModel:
    """A second classifier's predictions on the job (each cell's classes shifted by one), for the compare page."""
    first = job.classifier
    second = RegisteredModel.objects.create(
        name="second-opinion", version="1", sha256="0" * 64, summary="A second model, for comparing.", card=""
    )
    for field in job.fields.all():
        prediction = FieldPrediction.objects.create(
            field=field,
            classifier=second,
            model_name=second.name,
            model_version=second.version,
            image_probabilities=(field.image_probabilities or [0.0] * 19)[1:]
            + (field.image_probabilities or [0.0])[:1],
        )
        for cell in field.cells.all():
            shifted = cell.probabilities[1:] + cell.probabilities[:1]
            top = int(np.argmax(shifted))
            CellPrediction.objects.create(
                prediction=prediction, cell=cell, probabilities=shifted, top_class=top, top_confidence=shifted[top]
            )
    assert first is not None and first != second
    return second


@pytest.fixture
def results(django_user_model):
    """A processed job of two fields (one with a long ID), a second model's predictions on it, a job whose
    field failed, and a few cells flagged unfamiliar."""
    user = django_user_model.objects.create_user(
        username="biologist", password=PASSWORD, is_staff=True, is_superuser=True
    )
    job = intake.job_create(owner=user, uploads=[_uploads("plate1-A3", 7), _uploads(LONG_NAME, 11)], name="Plate 1")
    for field in job.fields.all():
        processing.field_process(field_id=field.pk)
    if any(model_field.name == "pixel_size_um" for model_field in Job._meta.get_fields()):
        Job.objects.filter(pk=job.pk).update(pixel_size_um=0.08)
    Cell.objects.filter(pk__in=list(Cell.objects.filter(field__job=job).values_list("pk", flat=True)[:3])).update(
        unfamiliar=True
    )
    job = Job.objects.get(pk=job.pk)
    _second_model_predictions(job)
    failed = intake.job_create(owner=user, uploads=[_uploads("plate2-C1", 3)], name="Plate 2")
    Field.objects.filter(job=failed).update(
        status=Field.Status.FAILED,
        progress=0.3,
        error="The blue channel of plate2-C1 could not be read: it is not a PNG or TIFF image. Upload it again.",
    )
    return user, job, failed


def _cell_pixel(field: Field) -> tuple[int, int, int]:
    """(label, row, col) of a pixel inside the largest cell whose box centre it contains."""
    with field.cell_labels.open("rb") as handle:
        labels = np.asarray(Image.open(handle))
    for cell in field.cells.order_by("-area_px"):
        row, col = (cell.min_row + cell.max_row) // 2, (cell.min_col + cell.max_col) // 2
        if labels[row, col] == cell.label:
            return cell.label, row, col
    pytest.fail("no cell contains the centre of its bounding box")


def _screen_point(page, field: Field, row: int, col: int) -> tuple[float, float]:
    box = page.locator("[data-layers]").bounding_box()
    return box["x"] + (col + 0.5) * box["width"] / field.width, box["y"] + (row + 0.5) * box["height"] / field.height


def _folders(root: Path) -> Path:
    """A microscope's layout: one folder per field, files named after their channel alone."""
    for folder, seed in (("A3", 1), ("B4", 2)):
        (root / "scan" / folder).mkdir(parents=True)
        for channel, data in _pngs(seed).items():
            (root / "scan" / folder / f"{channel}.png").write_bytes(data)
    return root / "scan"


def _download_names(page, locator) -> list[str]:
    with page.expect_download() as download_info:
        locator.click()
    return sorted(zipfile.ZipFile(download_info.value.path()).namelist())


def test_every_page_passes_axe_at_both_widths_and_the_new_views_work(browser, live_server, results, tmp_path):
    user, job, failed = results
    base = live_server.url
    field = job.fields.get(name="plate1-A3")
    violations: list[str] = []

    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    csp_messages = watch_csp(context)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
    page.goto(f"{base}/accounts/login/")
    violations += axe_serious(page)
    shot(page, "sign-in-desktop")
    sign_in(page, base, "biologist")
    assert page.get_by_role("link", name="favicon").count() == 0
    assert page.evaluate("document.querySelector('link[rel=icon]').href").endswith("/static/favicon.svg")

    # Jobs: one line of navigation, and a Details link per job.
    violations += axe_serious(page)
    assert page.locator(".topbar").bounding_box()["height"] < 70
    assert page.get_by_role("link", name="Details of Plate 1").is_visible()
    shot(page, "jobs-desktop")

    # Upload: two folders of blue.png ... yellow.png make two fields named after the folders.
    page.goto(f"{base}/jobs/new/")
    violations += axe_serious(page)
    scan = _folders(tmp_path)
    page.locator("[data-folder-input]").set_input_files(str(scan))
    assert page.locator("[data-field-summary]").inner_text() == "2 fields: A3, B4."
    assert page.get_by_label("Field ID of scan/B4/blue.png").input_value() == "B4"
    assert page.get_by_label("Channel of scan/B4/blue.png").input_value() == "blue"
    # Buttons stand in for the native input, so no "No file chosen" sits beside the list.
    assert page.locator('input[name="files"]').bounding_box()["width"] <= 1
    assert page.get_by_role("button", name="Choose a folder…").is_visible()
    page.locator("[data-folder-input]").set_input_files(str(scan))  # the same folder again: refused, not replaced
    assert "a file at this path is in the list already" in page.locator("[data-upload-errors]").inner_text()
    assert page.locator("[data-file-rows] tr").count() == 8
    violations += axe_serious(page)
    shot(page, "upload-folders-desktop")
    page.get_by_role("button", name="Upload and analyse").click()
    page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
    uploaded = Job.objects.exclude(pk__in=[job.pk, failed.pk]).get()
    assert sorted(uploaded.fields.values_list("name", flat=True)) == ["A3", "B4"]
    assert sorted(uploaded.fields.get(name="B4").channel_files()) == ["blue", "green", "red", "yellow"]
    assert page.get_by_test_id("time-left").inner_text() == "· time left known once a field is done"

    # The finished job: summary, per-field exports, everything in one zip.
    page.goto(f"{base}/jobs/{job.pk}/")
    violations += axe_serious(page)
    assert page.locator("#summary-heading").is_visible()
    names = _download_names(page, page.get_by_test_id("download-all"))
    assert {"submission.csv", "coco.json", "cells.csv", "labels/manifest.json", "crops/crops.csv"} <= set(names)
    assert f"labels/{LONG_NAME}_cells.png" in names
    shot(page, "job-desktop")

    # A failed field looks failed: a red state, its reason, no full progress bar.
    page.goto(f"{base}/jobs/{failed.pk}/")
    violations += axe_serious(page)
    row = page.locator("tr.field-row-failed")
    assert row.locator("progress").count() == 0 and row.get_by_test_id("field-failed").inner_text() == "stopped"
    assert page.get_by_test_id("job-failed").is_visible()
    shot(page, "job-failed-desktop")
    page.goto(f"{base}/fields/{failed.fields.get().pk}/")
    assert page.get_by_test_id("field-failed").is_visible()
    violations += axe_serious(page)

    # The viewer fits the stage to the image and the whole field shows above the fold.
    page.goto(f"{base}/fields/{field.pk}/")
    page.locator('[data-viewer][data-ready="true"]').wait_for()
    page.evaluate(
        "window.pinned = []; document.addEventListener('hpaweb:cell-pinned', (e) => window.pinned.push(e.detail))"
    )
    stage = page.locator("[data-stage]").bounding_box()
    assert abs(stage["width"] / stage["height"] - field.width / field.height) < 0.02, stage
    assert stage["y"] + stage["height"] <= DESKTOP["height"], stage
    layers = page.locator("[data-layers]").bounding_box()
    assert abs(layers["width"] - stage["width"]) <= 2 and abs(layers["height"] - stage["height"]) <= 2
    assert page.locator("[data-outline-legend]").inner_text().startswith("cell outline")
    assert (
        "µm" in page.locator("[data-scale-text]").inner_text() or "px" in page.locator("[data-scale-text]").inner_text()
    )
    assert page.get_by_test_id("field-prediction").locator(".bar-row").count() >= 1
    label, row_px, col_px = _cell_pixel(field)
    page.mouse.click(*_screen_point(page, field, row_px, col_px))
    assert errors == []
    assert page.locator("[data-cell-title]").inner_text() == f"Cell {label} (selected)"
    assert page.evaluate("window.pinned") == [{"label": label, "cellId": field.cells.get(label=label).pk}]
    assert page.evaluate("window.hpawebViewer.cells.length") == field.cells.count()
    violations += axe_serious(page)
    shot(page, "field-viewer-desktop", full_page=False)

    # Colour by class with a legend, numbers, and a filter by class that the table and the keys follow.
    page.get_by_label("Colour cells").select_option("class")
    assert page.locator("[data-class-legend] li").count() >= 1
    page.get_by_label("Numbers").check()
    assert page.locator("[data-numbers]").is_visible()
    cell = field.cells.get(label=label)
    page.get_by_label("Top class").select_option(str(cell.top_class))
    same_class = field.cells.filter(top_class=cell.top_class).count()
    assert page.locator("[data-cell-table] tbody tr:visible").count() == same_class
    assert (
        page.locator("[data-filter-count]").inner_text()
        == f"{same_class} of {field.cells.count()} cells match the filter."
    )
    assert page.get_by_label("Flag").locator("option", has_text="unfamiliar").count() == 1
    page.get_by_role("button", name="Fit").click()
    shot(page, "field-viewer-classes-desktop", full_page=False)
    page.get_by_label("Top class").select_option("")

    # Next and previous keys step through the cells in the table's order; "?" lists every shortcut.
    first_two = [
        int(v)
        for v in page.locator("[data-cell-table] tbody tr").evaluate_all(
            "rows => rows.slice(0, 2).map(r => r.dataset.label)"
        )
    ]
    page.keyboard.press("Escape")
    page.locator("[data-stage]").press("n")
    assert page.locator("[data-cell-title]").inner_text() == f"Cell {first_two[0]} (selected)"
    page.locator("[data-stage]").press("]")
    assert page.locator("[data-cell-title]").inner_text() == f"Cell {first_two[1]} (selected)"
    page.locator("[data-stage]").press("p")
    assert page.locator("[data-cell-title]").inner_text() == f"Cell {first_two[0]} (selected)"
    page.locator("[data-stage]").press("?")
    assert page.locator("[data-shortcuts]").is_visible()
    violations += axe_serious(page)
    shot(page, "shortcuts-desktop", full_page=False)
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.hasAttribute('data-shortcuts-close')")
    page.keyboard.press("Escape")
    assert page.locator("[data-shortcuts]").is_hidden()

    # Grey single-channel view, levels and gamma over the histogram.
    page.get_by_label("Colour cells").select_option("")
    page.get_by_label("Numbers").uncheck()
    page.get_by_role("button", name="Fit").click()
    page.get_by_label("Image", exact=True).select_option("green")
    page.locator("[data-levels] summary").click()
    page.get_by_label("Black", exact=True).fill("30")
    page.get_by_label("Gamma").fill("0.6")
    assert page.locator('[data-level-value="black"]').inner_text() == "30"
    wait_until(
        page,
        "(() => { const c = document.querySelector('[data-composite]'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; for (let i = 0; i < d.length; i += 4) if (d[i] !== d[i + 1] || d[i] !== d[i + 2]) return false; return true; })()",
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("[data-viewer]").screenshot(path=SCREENSHOTS / "field-viewer-grey-desktop.png")  # with the levels
    page.get_by_label("Image", exact=True).select_option("composite")

    # The cell table sorts by area.
    page.get_by_role("button", name="Area (px)").click()
    areas = [
        int(v) for v in page.locator("[data-cell-table] tbody tr").evaluate_all("rows => rows.map(r => r.dataset.area)")
    ]
    assert areas == sorted(areas)
    page.get_by_role("button", name="Area (px)").click()
    areas = [
        int(v) for v in page.locator("[data-cell-table] tbody tr").evaluate_all("rows => rows.map(r => r.dataset.area)")
    ]
    assert areas == sorted(areas, reverse=True)
    names = _download_names(page, page.locator('[data-crops-link="tiff"]'))
    assert len([name for name in names if name.endswith(".tif")]) == field.cells.count()
    violations += axe_serious(page)

    # Gallery: a long field ID ends in an ellipsis, its whole name in the tooltip; the shown cells' crops download.
    page.goto(f"{base}/jobs/{job.pk}/gallery/?min_confidence=0")
    tile = page.locator(".tile-title", has_text="B4-site").first
    assert tile.get_attribute("title").startswith(LONG_NAME)
    assert tile.locator(".tile-field").evaluate("el => el.scrollWidth > el.clientWidth")
    assert tile.bounding_box()["height"] < 24
    names = _download_names(page, page.get_by_test_id("gallery-crops").get_by_role("link", name="PNG (zip)"))
    assert "crops.csv" in names
    violations += axe_serious(page)
    shot(page, "gallery-desktop")

    model = job.classifier
    others = (
        ("models", "/models/"),
        ("model", f"/models/{model.pk}/"),
        ("compare", f"/jobs/{job.pk}/compare/"),
        ("account", "/accounts/"),
    )
    for name, url in others:
        page.goto(f"{base}{url}")
        violations += axe_serious(page)
        if name != "account":
            shot(page, f"{name}-desktop")
    page.goto(f"{base}/api/docs/")
    page.locator(".swagger-ui .opblock").first.wait_for()
    assert page.get_by_role("link", name="← Back to hpaweb").is_visible()
    violations += axe_serious(page)
    shot(page, "api-docs-desktop", full_page=False)
    assert csp_violations(page) == []

    # Phone: the same pages, the menu folds into one button, the tapped cell comes up where the user looks.
    phone = browser.new_context(
        viewport=PHONE, storage_state=context.storage_state(), is_mobile=True, has_touch=True, accept_downloads=True
    )
    phone_csp = watch_csp(phone)
    phone_page = phone.new_page()
    phone_page.set_default_timeout(30_000)
    pages = (
        ("jobs", "/"),
        ("upload", "/jobs/new/"),
        ("job", f"/jobs/{job.pk}/"),
        ("job-failed", f"/jobs/{failed.pk}/"),
        ("field-viewer", f"/fields/{field.pk}/"),
        ("gallery", f"/jobs/{job.pk}/gallery/"),
        ("models", "/models/"),
        ("model", f"/models/{model.pk}/"),
        ("compare", f"/jobs/{job.pk}/compare/"),
        ("account", "/accounts/"),
        ("api-docs", "/api/docs/"),
    )
    for name, url in pages:
        phone_page.goto(f"{base}{url}")
        if name == "api-docs":
            phone_page.locator(".swagger-ui .opblock").first.wait_for()
        else:
            assert phone_page.locator(".topbar").bounding_box()["height"] < 70, name
            assert phone_page.get_by_role("button", name="Menu").is_visible(), name
        if name == "field-viewer":
            phone_page.locator('[data-viewer][data-ready="true"]').wait_for()
            assert phone_page.locator("[data-cell-empty]").inner_text().startswith("Tap a cell")
            phone_page.locator("[data-stage]").scroll_into_view_if_needed()
            phone_page.touchscreen.tap(*_screen_point(phone_page, field, row_px, col_px))
            sheet = phone_page.locator("[data-cell-panel].sheet")
            sheet.wait_for()
            box = sheet.bounding_box()
            assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"] + 1, box
            # The tapped cell stays in sight, above the sheet.
            assert 0 <= _screen_point(phone_page, field, row_px, col_px)[1] < box["y"]
            assert phone_page.locator("[data-cell-title]").inner_text() == f"Cell {label} (selected)"
        if name in ("jobs", "job"):
            details = phone_page.get_by_role("link", name=re.compile(r"^(Details of|View) ")).first
            box = details.bounding_box()
            assert details.is_visible() and box["x"] + box["width"] <= PHONE["width"], name
        assert phone_page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), name
        violations += axe_serious(phone_page)
        if name != "account":  # the other browser test shoots it with a token shown
            shot(phone_page, f"{name}-phone", full_page=False)
        if name == "jobs":
            phone_page.get_by_role("button", name="Menu").click()
            assert phone_page.get_by_role("navigation", name="Main").get_by_role("link", name="New job").is_visible()
            violations += axe_serious(phone_page)
            shot(phone_page, "menu-phone", full_page=False)
    phone.close()
    signed_out = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    sign_in_page = signed_out.new_page()
    sign_in_page.goto(f"{base}/accounts/login/")
    violations += axe_serious(sign_in_page)
    shot(sign_in_page, "sign-in-phone", full_page=False)
    signed_out.close()
    context.close()
    assert errors == []
    assert violations == [], "\n".join(violations)
    assert (csp_messages, phone_csp) == ([], [])
