"""Glance and Keystone on SQLite under concurrent writes, as stackvault's parallel jobs make them.

With oslo.db's deferred BEGIN, two threads updating images at once made SQLite refuse one of them
("database is locked") and Glance answer 500: 39 of 40 image lifecycles failed at 8 threads, and a
backup's temporary image was left behind when its DELETE got the 500. Real clouds do not do this
(their database queues row locks), so neither may the dev cloud.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.devcloud


def test_parallel_image_create_update_delete_never_fails(devcloud):
    conn = devcloud.connect()

    def lifecycle(i: int) -> str:
        try:
            image = conn.image.create_image(name=f"concurrency-{i}", disk_format="raw", container_format="bare",
                                            data=bytes([i]) * 65536)
            conn.image.update_image(image, concurrency_round=str(i))
            conn.image.delete_image(image)
            return "ok"
        except Exception as exc:  # noqa: BLE001 - the failure is what this test reports
            return f"image {i}: {exc.__class__.__name__}: {str(exc)[:120]}"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lifecycle, range(32)))
    assert [r for r in results if r != "ok"] == []
    assert not [i for i in conn.image.images() if i.name.startswith("concurrency-")]
