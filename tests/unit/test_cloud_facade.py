"""Facade functions the dev cloud cannot drive (its Cinder has no upload-to-image action), each checked
alone against a stand-in for the one openstacksdk proxy it calls: what the caller gets back, that what
was made is handed over for deletion before any wait, and the one-line errors the SDK's become."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from openstack import exceptions as os_exc

from stackvault.cloud.connection import CloudError
from stackvault.cloud.servers import ServerSpec, boot_server
from stackvault.cloud.volumes import upload_to_image


class Glance:
    def __init__(self, outcome: Exception | None) -> None:
        self.outcome = outcome
        self.waited: list[tuple] = []

    def get_image(self, image_id):
        return SimpleNamespace(id=image_id, status="queued")

    def wait_for_status(self, image, *, status, failures, interval, wait):
        self.waited.append((image.id, status, tuple(failures), wait))
        if self.outcome is not None:
            raise self.outcome
        return SimpleNamespace(id=image.id, status=status)


def cloud(outcome: Exception | None = None) -> SimpleNamespace:
    cinder = SimpleNamespace(upload_volume_to_image=lambda volume_id, name, **kw: {"image_id": f"img-of-{volume_id}"})
    return SimpleNamespace(block_storage=cinder, image=Glance(outcome))


def test_an_uploaded_volume_is_handed_over_then_waited_for_until_active():
    conn, made = cloud(), []
    image = upload_to_image(conn, "v1", "stackvault-read-vdb-1234", 300, made.append)
    assert made == ["img-of-v1"] and (image.id, image.status) == ("img-of-v1", "active")
    assert conn.image.waited == [("img-of-v1", "active", ("killed", "deleted"), 300)]


@pytest.mark.parametrize(("outcome", "said"), [
    (os_exc.ResourceTimeout("Timeout waiting"), "timed out after 300 s waiting for Glance image img-of-v1"),
    (os_exc.ResourceFailure("Image:img-of-v1 transitioned to failure state killed"),
     "Glance image img-of-v1 did not become active: Image:img-of-v1 transitioned to failure state killed"),
])
def test_an_upload_that_fails_or_never_ends_is_one_cloud_error_and_the_image_was_handed_over(outcome, said):
    made: list[str] = []
    with pytest.raises(CloudError) as err:
        upload_to_image(cloud(outcome), "v1", "n", 300, made.append)
    assert err.value.message.startswith(said) and made == ["img-of-v1"]


def test_a_server_that_goes_to_error_is_handed_over_for_removal_and_named():
    created: list[str] = []

    def wait_for_server(server, *, status, failures, wait):
        raise os_exc.ResourceFailure("Server went to ERROR: No valid host was found")

    nova = SimpleNamespace(create_server=lambda **request: SimpleNamespace(id="s1", **request),
                           wait_for_server=wait_for_server)
    spec = ServerSpec(name="web1-restored", flavor_id="f1", networks="auto", security_groups=["default"])
    assert spec.request() == {"name": "web1-restored", "flavor_id": "f1", "networks": "auto", "metadata": {},
                              "security_groups": [{"name": "default"}]}
    with pytest.raises(CloudError, match="booting server web1-restored failed: Server went to ERROR: No valid host"):
        boot_server(SimpleNamespace(compute=nova), spec, 60, created.append)
    assert created == ["s1"]
