"""Deleting a model that something still uses is refused with a message naming the users."""

from __future__ import annotations

import pytest

from tests.apps.indexes.conftest import build_sync

pytestmark = pytest.mark.django_db


def test_a_model_an_upgrade_moves_to_is_refused_naming_the_upgrade(
    team, tiny_registered_model, tiny_model_path, tiny_version
):
    from apps.indexes.models import Deployment, ModelUpgrade
    from apps.registry.models import EmbeddingModel
    from apps.registry.services import ModelInUse, embedding_model_delete, embedding_model_register

    new = embedding_model_register(team=team, name="tiny-v2", path=str(tiny_model_path))
    old = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    deployment = Deployment.objects.create(team=team, name="prod", index=old)
    ModelUpgrade.objects.create(team=team, deployment=deployment, old_index=old,
                                new_model=new, split="test")  # fmt: skip
    with pytest.raises(ModelInUse, match=r"^tiny-v2 is used by 1 model upgrade; delete those"):
        embedding_model_delete(model=new)
    assert EmbeddingModel.objects.filter(pk=new.pk).exists()
