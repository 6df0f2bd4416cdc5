"""What a snapshot's consistency will be, from the image properties Nova applies to a server.

Nova adds the guest agent channel when the image has `hw_qemu_guest_agent=yes` at server creation,
and then quiesces (fsfreeze through the agent) for snapshots. With `os_require_quiesce=yes` a snapshot
whose quiesce fails is aborted, so a snapshot that succeeds is application-consistent; without it,
Nova only logs a failed freeze and goes on, so the consistency is unknown; without the agent property
there is no agent to ask: crash-consistent.
"""

from __future__ import annotations

from datetime import datetime

from ..server_definition import ServerDefinition

APPLICATION = "application"
UNKNOWN = "unknown"
CRASH = "crash"
RANK = {CRASH: 0, UNKNOWN: 1, APPLICATION: 2}

AGENT_PROPERTY = "hw_qemu_guest_agent"
REQUIRE_PROPERTY = "os_require_quiesce"


def truthy(value: object) -> bool:
    return str(value).strip().lower() in ("yes", "true", "1", "on", "y")


def expected_consistency(properties: dict) -> str:
    if not truthy(properties.get(AGENT_PROPERTY, "")):
        return CRASH
    if truthy(properties.get(REQUIRE_PROPERTY, "")):
        return APPLICATION
    return UNKNOWN


def quiesce_fix(server_name: str, image_ref: str) -> str:
    """What to tell a user whose required quiesce failed."""
    return (f"start the QEMU guest agent in server {server_name} (check /dev/virtio-ports/org.qemu.guest_agent.0 "
            f"and `systemctl status qemu-guest-agent`), or, to accept crash-consistent backups, create the server "
            f"from an image without {REQUIRE_PROPERTY}=yes (image {image_ref})")


def image_changed_after(definition: ServerDefinition) -> str | None:
    """Why the properties read now may not be those Nova applied, or None (they only count at creation)."""
    updated, created = definition.image_properties.get("_image_updated_at"), definition.created_at
    if definition.boot == "image" and updated and created:
        try:
            if (datetime.fromisoformat(updated.replace("Z", "+00:00"))
                    > datetime.fromisoformat(created.replace("Z", "+00:00"))):
                return (f"image {definition.image_id} was changed after server {definition.name} was created: "
                        "Nova applied the properties it had then, which may differ from those read now")
        except ValueError:
            return None
    return None
