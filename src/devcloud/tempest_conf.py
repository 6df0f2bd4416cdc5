"""tempest.conf for a running dev cloud, so OpenStack's own API tests judge the emulated Nova.

Tempest discovers little by itself: it needs the credentials, the catalog's endpoints, which image,
flavor and network a server boots with, and which optional features the cloud has. Everything the
dev cloud deliberately does not emulate is switched off through Tempest's own feature flags (each
with its reason in FEATURES_OFF), so its tests are skipped by Tempest rather than excluded one by
one; what the emulation gets wrong then shows up as failures.

    python -m devcloud.tempest_conf --state-dir DIR --workspace TEMPEST_WORKSPACE

It imports the emulated Nova's constants, so it runs with the services venv's python.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from devcloud import glance
from devcloud.context import CloudContext
from devcloud.nova.neutron import PRIVATE_NETWORK
from devcloud.nova.wsgi import MAX_VERSION, MIN_VERSION, version_str

#: Seeded images a server boots from (README.md, "Guest images"): both have a guest agent.
IMAGE = "sv-agent"
IMAGE_ALT = "sv-noagent"
#: Seeded flavors (nova/misc_api.py SEED_FLAVORS): m1.tiny and m1.nano, both fit the 256 MiB images.
FLAVOR, FLAVOR_ALT = "1", "42"

#: [compute-feature-enabled] options the emulated Nova does not offer, with the reason.
FEATURES_OFF: dict[str, str] = {
    "live_migration": "one compute host: nowhere to migrate to",
    "block_migration_for_live_migration": "one compute host: nowhere to migrate to",
    "volume_backed_live_migration": "one compute host: nowhere to migrate to",
    "cold_migration": "one compute host: nowhere to migrate to",
    "shelve_migrate": "one compute host: nowhere to migrate to",
    "can_migrate_between_any_hosts": "one compute host: nowhere to migrate to",
    "resize": "not emulated: a backup restores into a new server, never resizes one",
    "console_output": "not emulated: guests have no serial log Nova could serve",
    "vnc_console": "not emulated: no graphical consoles",
    "spice_console": "not emulated: no graphical consoles",
    "serial_console": "not emulated: no consoles",
    "rescue": "not emulated: not part of a backup or restore",
    "stable_rescue": "not emulated: not part of a backup or restore",
    "pause": "not emulated: stop/start cover what a backup needs",
    "suspend": "not emulated: stop/start cover what a backup needs",
    "shelve": "not emulated: stop/start cover what a backup needs",
    "change_password": "not emulated: needs a guest agent protocol Nova's libvirt driver drives",
    "personality": "deprecated since 2.57 and not emulated",
    "interface_attach": "not emulated: ports are fixed at boot",
    "attach_encrypted_volume": "no key manager in the dev cloud",
    "swap_volume": "not emulated: volume migration is Cinder-driven and not part of a backup",
    "volume_multiattach": "not emulated: Cinder's sparse backend has no multiattach type",
    "config_drive": "not emulated: guests get no metadata drive",
    "metadata_service": "not emulated: no metadata service",
    "hostname_fqdn_sanitization": "follows no particular release's hostname rules",
    "unified_limits": "Nova's own quota driver (os-quota-sets) is emulated, not Keystone's unified limits",
    "disk_config": "not emulated: OS-DCF is a Xen-era extension",
}


def _image_id(items: list[dict[str, Any]], name: str) -> str:
    for item in items:
        if item["name"] == name:
            return str(item["id"])
    raise SystemExit(f"devcloud: error: no image {name} in this cloud (start it without --skip images)")


def build(ctx: CloudContext, workspace: Path) -> dict[str, dict[str, str]]:
    """tempest.conf's sections for the cloud of `ctx`, which must be running."""
    images = glance.list_images(ctx, glance.admin_token(ctx))
    return {
        "DEFAULT": {"log_dir": str(workspace / "logs"), "log_file": "tempest.log"},
        "oslo_concurrency": {"lock_path": str(workspace / "tempest_lock")},
        "auth": {
            "use_dynamic_credentials": "true",  # one project and user per test class, made by admin
            "create_isolated_networks": "false",  # servers use the shared `private` network
            "admin_username": "admin", "admin_password": ctx.admin_password,
            "admin_project_name": "admin", "admin_domain_name": "Default",
            "default_credentials_domain_name": "Default",
        },
        "identity": {"uri_v3": ctx.auth_url(public=True), "auth_version": "v3",
                     "region": ctx.region, "v3_endpoint_type": "public"},
        "identity-feature-enabled": {"api_v2": "false", "api_v3": "true"},
        "service_available": {"nova": "true", "glance": "true", "cinder": "true",
                              "neutron": "true", "swift": "false"},
        "compute": {
            "image_ref": _image_id(images, IMAGE), "image_ref_alt": _image_id(images, IMAGE_ALT),
            "flavor_ref": FLAVOR, "flavor_ref_alt": FLAVOR_ALT,
            "fixed_network_name": PRIVATE_NETWORK,
            "min_microversion": version_str(MIN_VERSION),
            "max_microversion": version_str(MAX_VERSION),
            "build_timeout": "120", "region": ctx.region,
        },
        "compute-feature-enabled": {
            **{name: "false" for name in FEATURES_OFF},
            "snapshot": "true",
            "scheduler_enabled_filters": "",  # one host, no scheduler: no filter to test
        },
        "network-feature-enabled": {"floating_ips": "false", "ipv6": "false"},
        "image-feature-enabled": {"import_image": "false"},
        "volume": {"catalog_type": "volumev3", "region": ctx.region, "build_timeout": "120"},
        "volume-feature-enabled": {"backup": "false", "manage_volume": "false",
                                   "manage_snapshot": "false"},  # no cinder-backup process
        "validation": {"run_validation": "false"},  # fast-mode servers have no guest to SSH into
    }


def render(sections: dict[str, dict[str, Any]]) -> str:
    """INI text, each switched-off compute feature preceded by its reason as a comment."""
    lines = ["# Generated by `python -m devcloud.tempest_conf` for one dev cloud: do not edit."]
    for section, options in sections.items():
        lines += ["", f"[{section}]"]
        for name, value in options.items():
            if section == "compute-feature-enabled" and name in FEATURES_OFF:
                lines.append(f"# {FEATURES_OFF[name]}")
            lines.append(f"{name} = {value}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="devcloud.tempest_conf", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--workspace", required=True, type=Path,
                        help="a `tempest init` workspace: writes its etc/tempest.conf")
    args = parser.parse_args()
    workspace = args.workspace.resolve()
    sections = build(CloudContext.load(args.state_dir.resolve()), workspace)
    (workspace / "etc" / "tempest.conf").write_text(render(sections))


if __name__ == "__main__":
    main()
