"""A Cinder volume driver that keeps volumes and snapshots as sparse raw files.

Why files: the dev cloud has no LVM, iSCSI or Ceph, yet emulated Nova and stackvault's proxy need a
block device path for every attachment. A sparse raw file is that device: ``initialize_connection``
answers with os-brick's ``local`` connection type and the file path, which is what Nova hands to
QEMU and what the proxy reads. Everything else (API, scheduler, quotas, image upload and download
through Glance, state transitions) stays real Cinder code; this module is imported by Cinder's
volume manager inside the services virtualenv, never by stackvault.
"""

from __future__ import annotations

import os
from typing import Any

from cinder import exception, interface
from cinder.image import image_utils
from cinder.volume import configuration, driver, volume_utils
from oslo_config import cfg
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

GiB = 1024 ** 3

sparse_file_opts = [
    cfg.StrOpt('sparse_volumes_dir', default='$state_path/volumes',
               help='Directory holding the sparse raw files of volumes and snapshots.'),
    cfg.FloatOpt('sparse_max_over_subscription_ratio', default=20.0,
                 help='How far provisioned sizes may exceed the free space '
                      '(files are sparse, so a volume costs only what was written).'),
]

cfg.CONF.register_opts(sparse_file_opts, group=configuration.SHARED_CONF_GROUP)


@interface.volumedriver
class SparseFileDriver(driver.VolumeDriver):
    """Volumes as ``<dir>/volume-<id>``, snapshots as ``<dir>/snapshot-<id>``, all sparse raw."""

    VERSION = '1.0.0'
    CI_WIKI_NAME = 'devcloud'
    # One process, one backend: no clustering is ever configured here.
    SUPPORTS_ACTIVE_ACTIVE = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(sparse_file_opts)
        self.backend_name = (self.configuration.safe_get('volume_backend_name')
                             or 'sparse')

    # -- where things live -------------------------------------------------------------------
    @property
    def volumes_dir(self) -> str:
        return self.configuration.sparse_volumes_dir

    def local_path(self, volume: Any) -> str:
        return os.path.join(self.volumes_dir, volume.name)

    def _snapshot_path(self, snapshot: Any) -> str:
        return os.path.join(self.volumes_dir, snapshot.name)

    # -- setup ---------------------------------------------------------------------------------
    def do_setup(self, context: Any) -> None:
        os.makedirs(self.volumes_dir, exist_ok=True)

    def check_for_setup_error(self) -> None:
        if not os.access(self.volumes_dir, os.W_OK):
            raise exception.VolumeBackendAPIException(
                data=f'sparse volume directory {self.volumes_dir} is not writable; check '
                     'sparse_volumes_dir in cinder.conf')

    # -- volumes -------------------------------------------------------------------------------
    def _make_sparse(self, path: str, size_gb: int) -> None:
        with open(path, 'wb') as f:
            f.truncate(size_gb * GiB)

    def _grow_to(self, path: str, size_gb: int) -> None:
        """Make the file at least ``size_gb``; never shrinks (Cinder has no shrink)."""
        if os.path.getsize(path) < size_gb * GiB:
            os.truncate(path, size_gb * GiB)

    def _sparse_copy(self, src: str, dst: str) -> None:
        # cp keeps holes as holes, so a snapshot of a mostly empty 10 GiB volume costs nothing;
        # --reflink=auto shares blocks outright on file systems that can (btrfs, xfs).
        self._execute('cp', '--sparse=always', '--reflink=auto', src, dst)

    def create_volume(self, volume: Any) -> dict | None:
        self._make_sparse(self.local_path(volume), volume.size)
        return None

    def delete_volume(self, volume: Any) -> None:
        _remove_if_present(self.local_path(volume))

    def extend_volume(self, volume: Any, new_size: int) -> None:
        self._grow_to(self.local_path(volume), new_size)

    def create_cloned_volume(self, volume: Any, src_vref: Any) -> dict | None:
        self._sparse_copy(self.local_path(src_vref), self.local_path(volume))
        self._grow_to(self.local_path(volume), volume.size)
        return None

    def revert_to_snapshot(self, context: Any, volume: Any, snapshot: Any) -> None:
        self._sparse_copy(self._snapshot_path(snapshot), self.local_path(volume))
        self._grow_to(self.local_path(volume), volume.size)

    # -- snapshots -----------------------------------------------------------------------------
    def create_snapshot(self, snapshot: Any) -> dict | None:
        self._sparse_copy(self.local_path(snapshot.volume), self._snapshot_path(snapshot))
        return None

    def delete_snapshot(self, snapshot: Any) -> None:
        _remove_if_present(self._snapshot_path(snapshot))

    def create_volume_from_snapshot(self, volume: Any, snapshot: Any) -> dict | None:
        self._sparse_copy(self._snapshot_path(snapshot), self.local_path(volume))
        self._grow_to(self.local_path(volume), volume.size)
        return None

    # -- images (real Glance, real Cinder image code) ---------------------------------------------
    def copy_image_to_volume(self, context: Any, volume: Any, image_service: Any,
                             image_id: str, disable_sparse: bool = False) -> None:
        path = self.local_path(volume)
        image_utils.fetch_to_raw(context, image_service, image_id, path,
                                 self.configuration.volume_dd_blocksize,
                                 size=volume.size, disable_sparse=disable_sparse)
        # qemu-img convert rewrites the target at the image's virtual size; the volume keeps its own.
        self._grow_to(path, volume.size)

    def copy_volume_to_image(self, context: Any, volume: Any, image_service: Any,
                             image_meta: dict) -> None:
        volume_utils.upload_volume(context, image_service, image_meta,
                                   self.local_path(volume), volume)

    # -- exports and connections ---------------------------------------------------------------
    def ensure_export(self, context: Any, volume: Any) -> None:
        return None

    def create_export(self, context: Any, volume: Any, connector: Any) -> None:
        return None

    def remove_export(self, context: Any, volume: Any) -> None:
        return None

    def initialize_connection(self, volume: Any, connector: Any, **kwargs: Any) -> dict:
        return {'driver_volume_type': 'local',
                'data': {'device_path': self.local_path(volume)}}

    def initialize_connection_snapshot(self, snapshot: Any, connector: Any,
                                       **kwargs: Any) -> dict:
        return {'driver_volume_type': 'local',
                'data': {'device_path': self._snapshot_path(snapshot)}}

    def terminate_connection(self, volume: Any, connector: Any, **kwargs: Any) -> None:
        return None

    # -- stats for the scheduler ---------------------------------------------------------------
    def _update_volume_stats(self) -> None:
        fs = os.statvfs(self.volumes_dir)
        total_gb = fs.f_frsize * fs.f_blocks / GiB
        free_gb = fs.f_frsize * fs.f_bavail / GiB
        self._stats = {
            'volume_backend_name': self.backend_name,
            'vendor_name': 'devcloud',
            'driver_version': self.VERSION,
            'storage_protocol': 'local',
            'total_capacity_gb': round(total_gb, 2),
            'free_capacity_gb': round(free_gb, 2),
            'provisioned_capacity_gb': self._provisioned_gb(),
            'reserved_percentage': 0,
            'thin_provisioning_support': True,
            'thick_provisioning_support': False,
            'max_over_subscription_ratio':
                self.configuration.sparse_max_over_subscription_ratio,
            'multiattach': False,
            'QoS_support': False,
        }

    def _provisioned_gb(self) -> float:
        """Sum of the apparent sizes of the volume files (what thin provisioning counts)."""
        total = 0
        with os.scandir(self.volumes_dir) as entries:
            for entry in entries:
                if entry.name.startswith('volume-') and entry.is_file():
                    total += entry.stat().st_size
        return round(total / GiB, 2)


def _remove_if_present(path: str) -> None:
    # Deleting something already gone must succeed: Cinder retries deletes after errors.
    try:
        os.unlink(path)
    except FileNotFoundError:
        LOG.debug('%s was already gone', path)
