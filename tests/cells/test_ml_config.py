"""The one seam between settings and `ml`: what it answers, what it loads once, where its defaults come from."""

import re
import runpy
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from cells import ml_config, registry
from cells.models import RegisteredModel
from ml.constants import DEFAULT_MODEL_PATH, DEFAULT_SEGMENTATION_BACKEND, MAX_SIDE_PX


def test_max_side_and_default_backend_follow_the_settings(settings):
    settings.HPAWEB_MAX_SIDE_PX = 1234
    settings.ML_SEGMENTATION_BACKEND = "unet"
    assert (ml_config.max_side_px(), ml_config.default_segmentation_backend()) == (1234, "unet")


def test_unet_is_available_only_with_both_weight_files_present(settings, tmp_path):
    settings.ML_NUCLEI_WEIGHTS = settings.ML_CELL_WEIGHTS = ""
    assert ml_config.segmentation_backends() == {"classical": True, "unet": False}
    (tmp_path / "nuclei.pt").write_bytes(b"weights")
    settings.ML_NUCLEI_WEIGHTS = str(tmp_path / "nuclei.pt")
    settings.ML_CELL_WEIGHTS = str(tmp_path / "missing.pt")
    assert ml_config.segmentation_backends() == {"classical": True, "unet": False}
    (tmp_path / "cell.pt").write_bytes(b"weights")
    settings.ML_CELL_WEIGHTS = str(tmp_path / "cell.pt")
    assert ml_config.segmentation_backends() == {"classical": True, "unet": True}


def test_classifier_path_is_the_configured_file_or_none(settings, tmp_path):
    settings.ML_MODEL_PATH = ""
    assert ml_config.classifier_path() is None
    settings.ML_MODEL_PATH = str(tmp_path / "hpa-v2.pt")
    assert ml_config.classifier_path() is None
    (tmp_path / "hpa-v2.pt").write_bytes(b"weights")
    assert ml_config.classifier_path() == tmp_path / "hpa-v2.pt"


@pytest.mark.django_db
def test_a_classifier_is_loaded_once_per_process(ml_settings):
    shipped = registry.models_register_installed()[0]
    predictor = ml_config.get_classifier(shipped)
    assert predictor.name == "hpaweb-synth-v1"
    assert ml_config.get_classifier(shipped) is predictor


@pytest.mark.django_db
def test_at_most_ml_max_loaded_models_stay_loaded_least_recently_used_first(
    ml_settings, tmp_path, tiny_classifier_file
):
    ml_settings.ML_MAX_LOADED_MODELS = 2
    rows = [
        RegisteredModel.objects.create(name=f"m{index}", sha256=f"{index:064d}", source_path=str(tiny_classifier_file))
        for index in range(3)
    ]
    first = ml_config.get_classifier(rows[0])
    ml_config.get_classifier(rows[1])
    assert ml_config.get_classifier(rows[0]) is first  # used again: now the most recent
    ml_config.get_classifier(rows[2])
    assert [key[0] for key in ml_config.loaded_classifiers.loaded()] == [rows[0].pk, rows[2].pk]


def test_a_segmenter_is_loaded_once_per_backend(ml_settings):
    segmenter = ml_config.get_segmenter("classical")
    assert segmenter.backend == "classical"
    assert ml_config.get_segmenter("classical") is segmenter


def test_settings_defaults_are_the_ml_library_defaults(monkeypatch):
    for name in ("HPAWEB_MAX_SIDE_PX", "ML_MODEL_PATH", "ML_SEGMENTATION_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    base = runpy.run_path(str(Path(django_settings.BASE_DIR) / "hpaweb" / "settings" / "base.py"))
    assert (base["HPAWEB_MAX_SIDE_PX"], base["ML_MODEL_PATH"], base["ML_SEGMENTATION_BACKEND"]) == (
        MAX_SIDE_PX,
        str(DEFAULT_MODEL_PATH),
        DEFAULT_SEGMENTATION_BACKEND,
    )


@pytest.mark.parametrize("setting", ["ML_[A-Z_]+", "HPAWEB_MAX_SIDE_PX"])
def test_no_other_module_of_the_app_reads_the_ml_settings(setting):
    cells = Path(django_settings.BASE_DIR) / "cells"
    readers = [
        path.name
        for path in sorted(cells.rglob("*.py"))
        if re.search(rf"settings\.{setting}", path.read_text()) and path.name != "ml_config.py"
    ]
    assert readers == []


@pytest.mark.django_db
def test_a_registered_segmentation_pair_is_built_from_local_copies_of_its_two_files_once_per_process(
    ml_settings, django_user_model, tmp_path_factory
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.ml.bioimageio.support import session_packages

    packages = session_packages(tmp_path_factory)
    admin = django_user_model.objects.create_user(username="admin", password="pw", is_staff=True)
    model = registry.segmenter_import(
        owner=admin,
        nuclei_upload=SimpleUploadedFile("n.zip", packages.nuclei_zip.read_bytes()),
        cell_upload=SimpleUploadedFile("c.zip", packages.cell_zip.read_bytes()),
        visibility="shared",
    )
    cache = Path(django_settings.VAR_DIR) / "model-cache"
    assert ml_config.model_local_path(model) == cache / f"{model.sha256}.zip"
    assert ml_config.model_local_path(model, cell_package=True) == cache / f"{model.cell_sha256}.zip"
    assert ml_config.model_local_path(model, cell_package=True).read_bytes() == packages.cell_zip.read_bytes()
    segmenter = ml_config.get_segmenter(model.segmentation_backend)
    assert segmenter.backend == "bioimageio"
    assert ml_config.get_segmenter(model.segmentation_backend) is segmenter
    with pytest.raises(ValueError, match="The segmentation model 9999 this job was created with has been deleted"):
        ml_config.get_segmenter("model:9999")
