"""`stackvault doctor`: which consistency each server's next backup will have, why, and the fix.

Nova decides at server creation whether a guest gets the agent channel (`hw_qemu_guest_agent`) and
whether its snapshots must quiesce (`os_require_quiesce`), from the image's properties then (an
image-backed server) or from its boot volume's copy of them (`volume_image_metadata`, a
volume-backed server). Setting them later changes nothing for existing servers, so the doctor also
flags images changed after their servers were created. The same judgement is the backup policy
(`require_consistency`): `policy_refusal` is what the backup job uses before any snapshot.
"""

from __future__ import annotations

from collections.abc import Callable

from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from ..cloud.connection import CloudError
from ..cloud.consistency import (
    AGENT_PROPERTY,
    APPLICATION,
    RANK,
    REQUIRE_PROPERTY,
    expected_consistency,
    image_changed_after,
)
from ..cloud.definition import server_definition
from ..cloud.images import set_image_properties
from ..cloud.inventory import Selection, select_servers
from ..cloud.rbd import bases
from ..cloud.snapshots import snapshot_quota
from ..errors import UsageError
from ..retrying import first_line
from ..server_definition import ServerDefinition

ENFORCEMENT = ("image-backed: whether Nova aborts a live snapshot whose freeze fails depends on its release (libvirt "
               "since Xena logs the failure and snapshots anyway), so application is a claim until proven: install "
               "`stackvault guest-hook` in the guest and keep verify_quiesce on, "
               "and backups say application (verified)")

RECREATE = ("image properties apply only when a server is created: recreate the servers that use it "
            "(or rebuild them, which replaces their root disk) for the fix to take effect")


def fix_commands(definition: ServerDefinition) -> list[str]:
    """The `openstack` commands that give the server's source application consistency."""
    props = definition.image_properties
    sets = f"--property {AGENT_PROPERTY}=yes --property {REQUIRE_PROPERTY}=yes"
    if definition.boot == "image":
        return [f"openstack image set {sets} {definition.image_id}"] if definition.image_id else []
    commands = []
    if props.get("image_id"):
        commands.append(f"openstack image set {sets} {props['image_id']}")
    boot = next((v for v in definition.volumes if v.boot_index == 0), None)
    if boot is not None:
        commands.append(f"openstack volume set --image-property {AGENT_PROPERTY}=yes "
                        f"--image-property {REQUIRE_PROPERTY}=yes {boot.id}")
    return commands


def _image_of(definition: ServerDefinition) -> str | None:
    if definition.boot == "image":
        return definition.image_id
    return definition.image_properties.get("image_id")


def _flags(definition: ServerDefinition, consistency: str) -> list[str]:
    """Why what the cloud says now may not be what the server got at creation, or what Nova will do."""
    flags = []
    if consistency == APPLICATION and definition.boot == "image":
        flags.append(ENFORCEMENT)
    changed = image_changed_after(definition)
    if changed:
        flags.append(changed)
    source = definition.image_properties_source
    if source.endswith("(deleted)"):
        flags.append(f"{source.replace(' (deleted)', '')} was deleted: the properties the server was created "
                     "with cannot be read, stackvault assumes none (crash)")
    elif source == "none":
        flags.append("the server has neither an image nor a boot volume with image metadata: no agent properties")
    return flags


def policy_refusal(definition: ServerDefinition, consistency: str, require: str) -> str | None:
    """Why a server must not be backed up under `require`, naming the server, its consistency and the fix."""
    if RANK[consistency] >= RANK[require]:
        return None
    fixes = fix_commands(definition)
    fix = (" && ".join(fixes) if fixes
           else f"boot the server from an image with {AGENT_PROPERTY}=yes {REQUIRE_PROPERTY}=yes")
    return (f"server {definition.name} ({definition.id}) would get a {consistency}-consistent backup, below the "
            f"required {require} (require_consistency): refused before any snapshot; fix: {fix}, then recreate the "
            f"server ({RECREATE.split(': ')[0]}), or lower require_consistency / --require-consistency")


def diagnose_server(conn, server, require: str) -> dict:
    definition = server_definition(conn, server)
    props = definition.image_properties
    consistency = expected_consistency(props)
    return {
        "server_id": server.id,
        "name": server.name,
        "boot": definition.boot,
        "created_at": definition.created_at,
        "image_id": _image_of(definition),
        "image_name": props.get("_image_name") or props.get("image_name"),
        "properties_source": definition.image_properties_source,
        AGENT_PROPERTY: props.get(AGENT_PROPERTY),
        REQUIRE_PROPERTY: props.get(REQUIRE_PROPERTY),
        "consistency": consistency,
        "meets_policy": RANK[consistency] >= RANK[require],
        "flags": _flags(definition, consistency),
        "fix": fix_commands(definition) if consistency != APPLICATION else [],
    }


def doctor(conn, selection: Selection, require: str, *, repo_id: str | None = None, parallel: int = 1) -> dict:
    """The report: every server in scope (all of the project when nothing is selected)."""
    if require not in RANK:
        raise UsageError(f"unknown consistency {require!r}", "use application, unknown or crash")
    if selection.empty():
        selection.all_servers = True
    servers = [diagnose_server(conn, s, require) for s in select_servers(conn, selection)]
    fixes = list(dict.fromkeys(cmd for s in servers for cmd in s["fix"]))
    failing = [s["name"] for s in servers if not s["meets_policy"]]
    return {"require_consistency": require, "ok": not failing, "failing": failing, "servers": servers,
            "fixes": fixes, "retained_bases": retained_bases(conn, repo_id, parallel)}


def retained_bases(conn, repo_id: str | None = None, parallel: int = 1) -> dict:
    """The Cinder snapshots kept as bases of the next changed-block backups: they count against the
    project's snapshot (and gigabytes) quota and keep their volumes from being deleted, so the doctor
    shows them, flags those of another repository (nothing releases an abandoned repository's bases
    on its own), and checks the snapshot quota leaves room for `parallel` running backups beside them."""
    try:
        found = bases(conn)
    except (os_exc.SDKException, ks_exc.ClientException) as exc:
        return {"count": None, "error": first_line(exc), "flags": []}
    flags = []
    if repo_id is not None:
        others: dict[str, int] = {}
        for b in found:
            if b["repository"] != repo_id:
                others[b["repository"]] = others.get(b["repository"], 0) + 1
        flags += [f"{n} base snapshots are kept for repository {other}, not this proxy's repository {repo_id}: if "
                  f"that repository is no longer backed up to, `stackvault cleanup --bases --repository {other}` "
                  "releases them" for other, n in sorted(others.items())]
    quota = snapshot_quota(conn)
    if quota is not None and quota[1] >= 0 and quota[1] - quota[0] < parallel:
        used, maximum = quota
        flags.append(f"Cinder's snapshot quota leaves room for {max(0, maximum - used)} more snapshots ({used} of "
                     f"{maximum} used, {len(found)} of them retained bases) but a backup run takes up to {parallel} at "
                     "once ([cloud] parallel): backups then release a volume's base to make room and read it in "
                     "full; raise the project's snapshot quota by one per volume backed up from Ceph (two with "
                     "Differentials) plus [cloud] parallel")
    return {"count": len(found), "gigabytes": sum(b["size_gb"] or 0 for b in found), "snapshots": found,
            "snapshot_quota": None if quota is None else {"used": quota[0], "max": quota[1]}, "flags": flags}


def images_to_fix(report: dict) -> list[dict]:
    """Images (with the servers using them) that lack one of the two properties."""
    images: dict[str, dict] = {}
    for s in report["servers"]:
        if s["consistency"] == APPLICATION or not s["image_id"]:
            continue
        entry = images.setdefault(s["image_id"], {"image_id": s["image_id"], "image_name": s["image_name"],
                                                  "servers": []})
        entry["servers"].append(s["name"])
    return list(images.values())


def fix_images(conn, report: dict, confirm: Callable[[str], bool]) -> dict:
    """Set both properties on every image that lacks them, after `confirm(question)` says yes."""
    todo = images_to_fix(report)
    done: dict = {"asked": bool(todo), "confirmed": False, "images": [], "note": RECREATE if todo else ""}
    if not todo:
        return done
    names = ", ".join(f"{i['image_name'] or i['image_id']} (used by {', '.join(i['servers'])})" for i in todo)
    if not confirm(f"set {AGENT_PROPERTY}=yes and {REQUIRE_PROPERTY}=yes on {len(todo)} image(s): {names}?"):
        return done
    done["confirmed"] = True
    for item in todo:
        try:
            set_image_properties(conn, item["image_id"], {AGENT_PROPERTY: "yes", REQUIRE_PROPERTY: "yes"})
            done["images"].append({**item, "status": "updated"})
        except CloudError as exc:
            done["images"].append({**item, "status": "failed",
                                   "error": f"{exc.message} (ask the image's owner or an admin to run "
                                            f"openstack image set --property {AGENT_PROPERTY}=yes --property "
                                            f"{REQUIRE_PROPERTY}=yes {item['image_id']})"})
    return done
