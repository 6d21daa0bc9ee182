"""kopf's bookkeeping under `kopf.geo.ai/`, apart from the user-facing `geo.ai/` keys: the old
keys read and migrated, a corrupt value logged, reported and read as absent (issue 31.5).

The storages are kopf's own classes, driven as kopf's processing drives them (fetch the old
essence, build the new one, clear both, diff, store): nothing of kopf's is faked.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import kopf
import pytest

from geo_operator import handlers
from geo_operator.api import names

SPEC = {"model": {"name": "digits"}}
ROLLOUT = names.ROLLOUT_ANNOTATION
EXTRA = [("metadata", "annotations", ROLLOUT)]  # the rollout handler's field, as kopf adds it


def _settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    handlers.persistence(settings)
    return settings


def _body(annotations: dict[str, str], spec: dict[str, Any] | None = None) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "geo.ai/v1alpha1",
            "kind": "GeoDeployment",
            "metadata": {"name": "d", "namespace": "n", "annotations": dict(annotations)},
            "spec": spec or SPEC,
        }
    )


def _essences(settings: kopf.OperatorSettings, body: kopf.Body) -> tuple[Any, Any]:
    """(old, new) as kopf's processing computes them for the diff."""
    persistence = settings.persistence
    old = persistence.diffbase_storage.fetch(body=body)
    new = persistence.diffbase_storage.build(body=body, extra_fields=EXTRA)
    old = persistence.progress_storage.clear(essence=old) if old is not None else None
    new = persistence.progress_storage.clear(essence=new)
    return old, new


def _essence_json(spec: dict[str, Any]) -> str:
    return json.dumps({"spec": spec})


def test_kopfs_state_lives_apart_from_the_user_facing_prefix() -> None:
    settings = _settings()
    body = _body({})
    patch = kopf.Patch()
    settings.persistence.diffbase_storage.store(body=body, patch=patch, essence={"spec": SPEC})
    settings.persistence.progress_storage.store(
        key=kopf.HandlerId("reconcile_fn"), record={"started": "x"}, body=body, patch=patch
    )
    written = {k for k, v in patch["metadata"]["annotations"].items() if v is not None}
    assert written == {
        "kopf.geo.ai/last-handled-configuration",
        "kopf.geo.ai/reconcile_fn",
    }
    assert settings.persistence.finalizer == "geo.ai/finalizer"  # kept: objects carry it


def test_a_junk_diff_base_is_logged_reported_and_read_as_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings()
    for key in ("geo.ai/last-handled-configuration", "kopf.geo.ai/last-handled-configuration"):
        body = _body({key: "{not json"})
        with caplog.at_level(logging.WARNING, logger=handlers.log.name):
            caplog.clear()
            old, new = _essences(settings, body)
            _essences(settings, body)  # the next event: not logged again
        assert old is None  # handled anew, as if created: the spec edit is acted on
        assert new == {"spec": SPEC}
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1, lines
        assert key in lines[0] and "not JSON" in lines[0] and "handled anew" in lines[0]


def test_a_diff_base_that_is_json_but_no_object_is_read_as_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings()
    body = _body({"kopf.geo.ai/last-handled-configuration": "[1, 2]"})
    with caplog.at_level(logging.WARNING, logger=handlers.log.name):
        assert settings.persistence.diffbase_storage.fetch(body=body) is None
    assert "a JSON list, not an object" in caplog.text


def test_a_junk_progress_record_lets_the_handler_run_anew(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings()
    body = _body({"kopf.geo.ai/reconcile_fn": "junk", "geo.ai/other_fn": "{"})
    with caplog.at_level(logging.WARNING, logger=handlers.log.name):
        storage = settings.persistence.progress_storage
        assert storage.fetch(key=kopf.HandlerId("reconcile_fn"), body=body) is None
        assert storage.fetch(key=kopf.HandlerId("other_fn"), body=body) is None
    assert "kopf.geo.ai/reconcile_fn" in caplog.text and "geo.ai/other_fn" in caplog.text


def test_the_old_diff_base_is_read_and_moved_on_the_next_write() -> None:
    settings = _settings()
    old_spec = {"model": {"name": "old"}}
    body = _body(
        {
            "geo.ai/last-handled-configuration": _essence_json(old_spec),
            "geo.ai/kopf-managed": "yes",
            "geo.ai/reconcile_fn": json.dumps({"started": "t", "success": True}),
            ROLLOUT: "promote",
        }
    )
    old, new = _essences(settings, body)
    assert old == {"spec": old_spec}
    # kopf's old keys are no part of the essence; the user's rollout annotation is.
    assert new == {"spec": SPEC, "metadata": {"annotations": {ROLLOUT: "promote"}}}
    assert old["spec"] != new["spec"]  # the spec edit made under the old keys is seen

    patch = kopf.Patch()
    settings.persistence.diffbase_storage.store(body=body, patch=patch, essence=new)
    settings.persistence.progress_storage.store(
        key=kopf.HandlerId("reconcile_fn"), record={"started": "t2"}, body=body, patch=patch
    )
    annotations = patch["metadata"]["annotations"]
    assert json.loads(annotations["kopf.geo.ai/last-handled-configuration"]) == new
    assert annotations["kopf.geo.ai/reconcile_fn"] == json.dumps({"started": "t2"}).replace(" ", "")
    for old_key in (
        "geo.ai/last-handled-configuration",
        "geo.ai/kopf-managed",
        "geo.ai/reconcile_fn",
    ):
        assert annotations[old_key] is None  # removed
    assert ROLLOUT not in annotations  # the user's annotation is the rollout handler's


def test_the_new_keys_win_over_the_old_ones() -> None:
    settings = _settings()
    body = _body(
        {
            "geo.ai/last-handled-configuration": _essence_json({"model": {"name": "old"}}),
            "kopf.geo.ai/last-handled-configuration": _essence_json(SPEC),
        }
    )
    old, new = _essences(settings, body)
    assert old == new == {"spec": SPEC}  # nothing changed: no handler runs


def test_a_migrated_object_has_no_diff_from_its_own_bookkeeping() -> None:
    """After a write, kopf's keys (new ones included) are no change of the object's."""
    settings = _settings()
    body = _body({})
    patch = kopf.Patch()
    _, new = _essences(settings, body)
    settings.persistence.diffbase_storage.store(body=body, patch=patch, essence=new)
    settings.persistence.progress_storage.store(
        key=kopf.HandlerId("reconcile_fn"), record={"started": "t"}, body=body, patch=patch
    )
    settings.persistence.progress_storage.touch(body=body, patch=patch, value="x")
    stored = {k: v for k, v in patch["metadata"]["annotations"].items() if v is not None}
    again = _body(stored)
    old, new = _essences(settings, again)
    assert old == new


def test_the_api_server_sends_only_geos_children() -> None:
    """Issue 29: server-side label selectors on every child watch, none on GeoDeployments,
    each no stricter than the handlers' own filters (which stay, client-side)."""
    from kopf._cogs.structs.references import Resource

    settings = kopf.OperatorSettings()
    handlers.watch_selectors(settings)
    managed = f"{names.MANAGED_BY_LABEL}={names.MANAGER}"

    def selector(group: str, plural: str, kind: str) -> list[str]:
        resource = Resource(group, "v1", plural, kind=kind, namespaced=True)
        return list(settings.watching.label_selectors.collect(resource))

    for group, plural, kind in (
        ("apps", "deployments", "Deployment"),
        ("", "pods", "Pod"),
        ("", "services", "Service"),
        ("", "configmaps", "ConfigMap"),
    ):
        assert selector(group, plural, kind) == [managed], plural
    assert selector("batch", "jobs", "Job") == [f"{names.COMPONENT_LABEL}={names.TUNING_COMPONENT}"]
    assert selector("geo.ai", "geodeployments", "GeoDeployment") == []
    assert selector("", "secrets", "Secret") == []


@pytest.mark.parametrize(
    "extra", [EXTRA, None, [("status", "phase")], [("metadata", "generation")]]
)
def test_the_essence_is_kopfs_own_without_copying_the_status(extra: Any) -> None:
    """The diff-base is built from the spec, labels and annotations only (kopf copied the
    whole body, status and managedFields, for every event): the essence is the same as
    kopf's own storage builds from the whole body, extra fields included."""
    full = kopf.Body(
        {
            "apiVersion": "geo.ai/v1alpha1",
            "kind": "GeoDeployment",
            "metadata": {
                "name": "d",
                "namespace": "n",
                "uid": "u",
                "generation": 3,
                "labels": {"team": "a"},
                "annotations": {
                    ROLLOUT: "promote",
                    "kopf.geo.ai/last-handled-configuration": _essence_json(SPEC),
                    "geo.ai/last-handled-configuration": _essence_json(SPEC),
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "note": "kept",
                },
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            },
            "spec": SPEC,
            "status": {"phase": "Ready", "conditions": [{"type": "Ready"}]},
        }
    )
    storage = _settings().persistence.diffbase_storage
    expected = kopf.AnnotationsDiffBaseStorage(
        prefix=handlers.KOPF_PREFIX, key=handlers.DIFFBASE_KEY
    ).build(body=full, extra_fields=extra)
    expected["metadata"]["annotations"].pop("geo.ai/last-handled-configuration")
    assert storage.build(body=full, extra_fields=extra) == expected
    # The rollout handler's field (what kopf passes in production) takes the short way.
    assert handlers._within_essence(extra) == (extra in (EXTRA, None))
