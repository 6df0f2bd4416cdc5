"""Nova servers as jobs need them: the one a policy item names, a restored server booted from restored
disks (and removed again when the restore fails), and the proxy's own server that volumes attach to.

Booting and deleting wait with openstacksdk's waiters (`wait_for_server`, `wait_for_delete`); reads
go through the one retry policy (`connection.cloud_call`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from openstack import exceptions as os_exc
from openstack.compute.v2.server import Server

from ..retrying import first_line
from .connection import CloudError, cloud_call, found, listing_query
from .removal import remove

log = logging.getLogger(__name__)


@dataclass
class ServerSpec:
    """What a new server is booted with (Nova's create-server request, typed)."""

    name: str
    flavor_id: str
    networks: list[dict[str, str]] | str  # [{"uuid": ...}] or "auto"
    metadata: dict[str, str] = field(default_factory=dict)
    image_id: str | None = None
    block_device_mapping: list[dict] = field(default_factory=list)
    key_name: str | None = None
    security_groups: list[str] = field(default_factory=list)
    availability_zone: str | None = None

    def request(self) -> dict:
        """The keyword arguments of openstacksdk's create_server."""
        args: dict = {"name": self.name, "flavor_id": self.flavor_id, "networks": self.networks,
                      "metadata": self.metadata}
        if self.key_name:
            args["key_name"] = self.key_name
        if self.security_groups:
            args["security_groups"] = [{"name": g} for g in self.security_groups]
        if self.availability_zone:
            args["availability_zone"] = self.availability_zone
        if self.image_id:
            args["image_id"] = self.image_id
        if self.block_device_mapping:
            args["block_device_mapping_v2"] = self.block_device_mapping
        return args


def get_server(conn, server_id: str) -> Server:
    return cloud_call(f"get server {server_id}", lambda: conn.compute.get_server(server_id))


def visible_servers(conn, *, all_projects: bool = False, project_id: str | None = None) -> list[Server]:
    """The servers the connection's token may see: its project's, or (an admin's) every project's or
    one other project's."""
    query = listing_query(all_projects, project_id)
    return cloud_call("list servers", lambda: list(conn.compute.servers(**query)))


def find_server(conn, name_or_id: str, *, all_projects: bool = False) -> Server | None:
    """The server of that id or name the token may see, or None."""
    return cloud_call(f"find server {name_or_id}", lambda: conn.compute.find_server(
        name_or_id, ignore_missing=True, all_projects=all_projects))


def set_server_metadata(conn, server_id: str, metadata: dict[str, str]) -> Server:
    """Set these metadata pairs on the server (others stay); the server as Nova has it then."""
    cloud_call(f"set metadata of server {server_id}",
               lambda: conn.compute.set_server_metadata(server_id, **metadata))
    return get_server(conn, server_id)


def server_exists(conn, name: str) -> bool:
    return found(f"server {name}", lambda: conn.compute.find_server(name, ignore_missing=True))


def find_server_id(conn, name_or_id: str) -> str | None:
    server = find_server(conn, name_or_id)
    return server.id if server is not None else None


def find_flavor_id(conn, name_or_id: str) -> str | None:
    flavor = cloud_call(f"find flavor {name_or_id}", lambda: conn.compute.find_flavor(name_or_id, ignore_missing=True))
    return flavor.id if flavor is not None else None


def flavor_names(conn) -> list[str]:
    """The names of the flavors the token may boot, sorted as a person reads them."""
    return sorted((f.name for f in cloud_call("list flavors", lambda: list(conn.compute.flavors()))), key=str.lower)


def network_names(conn) -> list[str]:
    """The names of the networks the token may attach a server to, sorted as a person reads them."""
    return sorted((n.name for n in cloud_call("list networks", lambda: list(conn.network.networks()))),
                  key=str.lower)


def image_id_of(server: Server) -> str | None:
    """The id of the image an image-backed server was booted (or rebuilt) from; None when from a volume."""
    return getattr(server.image, "id", None) or None


def find_network_id(conn, name_or_id: str) -> str | None:
    network = cloud_call(f"find network {name_or_id}",
                         lambda: conn.network.find_network(name_or_id, ignore_missing=True))
    return network.id if network is not None else None


def boot_server(conn, spec: ServerSpec, timeout_s: float, created: Callable[[str], None]) -> Server:
    """Create the server and wait until it is ACTIVE; `created(id)` is called as soon as it exists, so that
    the caller can remove it should the boot fail. Not retried: a second create could make two servers."""
    try:
        server = conn.compute.create_server(**spec.request())
        created(server.id)
        return conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], wait=timeout_s)
    except os_exc.SDKException as exc:
        raise CloudError(f"booting server {spec.name} failed: {first_line(exc)}",
                         "check flavor, network and quota") from None


def rebuild_server(conn, server_id: str, image_id: str, metadata: dict[str, str], timeout_s: float) -> Server:
    """Nova's rebuild: the server's root disk made anew from `image_id`, its id, ports, attached volumes
    and power state kept; waits until it is back in the state it had (ACTIVE, or SHUTOFF for a
    stopped one). Not retried: a second rebuild would start over a disk being written."""
    before = get_server(conn, server_id).status
    try:
        conn.compute.rebuild_server(server_id, image_id, metadata=metadata)
        return conn.compute.wait_for_server(get_server(conn, server_id), status=before,
                                            failures=["ERROR"], wait=timeout_s)
    except os_exc.SDKException as exc:
        raise CloudError(f"rebuilding server {server_id} failed: {first_line(exc)}",
                         "check the server's state in Nova (`openstack server show`)") from None


def delete_server(conn, server_id: str, timeout_s: float, leftovers: list[str] | None = None) -> bool:
    """Delete the server and wait until Nova has; False (and it noted in `leftovers`) when it stays."""

    def delete() -> None:
        conn.compute.delete_server(server_id, ignore_missing=True)
        conn.compute.wait_for_delete(conn.compute.get_server(server_id), wait=timeout_s)

    return remove(f"server {server_id}", delete, leftovers)


def detach_volume(conn, server_id: str, volume_id: str) -> bool:
    """Detach a volume from a server; False when Nova refuses (e.g. it is not attached to that server)."""
    try:
        conn.compute.delete_volume_attachment(server_id, volume_id)
    except os_exc.SDKException:
        return False
    return True


@contextmanager
def locked_while(conn, server_id: str, reason: str, warnings: list[str]) -> Iterator[bool]:
    """Nova's lock on the server for the time of the block: its users can neither delete, rebuild nor
    resize it under a backup's snapshot (the admin taking the snapshot is not held back by it).

    Yields whether this lock is stackvault's: a server its owner or an admin had already locked is left
    locked as it was, never unlocked by a backup. A refused lock or unlock is a warning of the backup,
    not its failure: the snapshot is as good without it. The unlock is repeated under the one retry
    policy (a 5xx or a dropped connection); one that still fails names the command that undoes it."""
    server = get_server(conn, server_id)
    if server.is_locked:
        yield False
        return
    try:
        conn.compute.lock_server(server_id, locked_reason=reason)
    except os_exc.SDKException as exc:
        warnings.append(f"server {server_id} could not be locked for its backup: {first_line(exc)}")
        yield False
        return
    try:
        yield True
    finally:
        try:
            cloud_call(f"unlock server {server_id}", lambda: conn.compute.unlock_server(server_id))
        except os_exc.NotFoundException:
            pass  # deleted meanwhile (by an admin: its owner could not): nothing is left locked
        except os_exc.SDKException as exc:
            log.warning("server %s stays locked: %s", server_id, first_line(exc))
            warnings.append(f"server {server_id} stays locked: {first_line(exc)} "
                            f"(unlock it with `openstack server unlock {server_id}`)")
