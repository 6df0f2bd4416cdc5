"""Human-readable reports, in the spirit of Bacula's job reports: what a person checks in the morning."""

from __future__ import annotations

from datetime import datetime

from .engine.manifest import BackupRecord
from .progress import human_bytes

_STATUS = {"success": "OK", "warning": "OK -- with warnings", "failed": "Error"}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def backup(r: dict) -> str:
    lines = [f"Backup {r['backup_id']}"]
    level = r["level"].capitalize()
    if r["requested_level"] != r["level"]:
        level += f" (requested {r['requested_level']})"
    lines.append(f"  Level:            {level}")
    if r.get("consistency"):
        lines.append(f"  Consistency:      {r['consistency']}")
    if r.get("quiesce_proof"):
        lines.append(f"  Quiesce proof:    {r['quiesce_proof']['status']}: {r['quiesce_proof']['message']}")
    for d in r["disks"]:
        lines.append(f"  Disk {d['name']:<20} {human_bytes(d['size']):>10}  {d['level']:<12} read "
                     f"{human_bytes(d['bytes_read'])}, stored {human_bytes(d['bytes_stored'])}, "
                     f"changed {d['blocks_changed']}/{d['blocks_total']} blocks")
        if d.get("reason"):
            lines.append(f"    {d['reason']}")
        if d.get("read", {}).get("path") == "changed_blocks":
            rd = d["read"]
            lines.append(f"    changed blocks since snapshot {rd['base_snapshot']}: {rd['blocks_listed']} listed in "
                         f"{rd['listing_s']:.3f} s; {rd['sample_blocks']} blocks sampled "
                         f"({rd.get('sample_zero_blocks', 0)} of them listed as discarded), all as expected")
        rd = d.get("read") or {}
        if rd.get("rbd"):
            lines.append(f"    read from Ceph: rbd:{rd['rbd']} (Cinder backend {rd['backend']})")
        elif rd.get("path") in ("attach", "image"):
            lines.append(f"    read through a temporary volume ({rd['path']}): {rd['why']}")
    dur = r["duration_s"] or 1e-9
    lines += [
        f"  Size:             {human_bytes(r['size'])}",
        f"  Read:             {human_bytes(r['bytes_read'])} in {r['duration_s']:.1f} s "
        f"({human_bytes(r['bytes_read'] / dur)}/s)",
        f"  Stored:           {human_bytes(r['bytes_stored'])} "
        f"(reduction {_ratio(r['bytes_read'], r['bytes_stored'])} by dedup and compression)",
        f"  Status:           {_STATUS.get(r['status'], r['status'])}",
    ]
    lines += [f"  Warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


def record_dict(rec: BackupRecord) -> dict:
    from dataclasses import asdict

    d = asdict(rec)
    d.update(size=rec.size, bytes_read=rec.bytes_read, bytes_stored=rec.bytes_stored)
    return d


def show(d: dict) -> str:
    lines = [f"Backup {d['backup_id']}",
             f"  Created:     {d['created']}   Finished: {d['finished']}   Host: {d['host']}",
             f"  Level:       {d['level']} (requested {d['requested_level']})   Status: {d['status']}"]
    if d.get("name"):
        lines.append(f"  Name:        {d['name']}")
    if d.get("consistency"):
        lines.append(f"  Consistency: {d['consistency']}")
    if d.get("quiesce_proof"):
        lines.append(f"  Quiesce:     {d['quiesce_proof']['status']}: {d['quiesce_proof']['message']}")
    if d.get("tags"):
        lines.append("  Tags:        " + ", ".join(f"{k}={v}" for k, v in d["tags"].items()))
    lines.append(f"  Size:        {human_bytes(d['size'])}, read {human_bytes(d['bytes_read'])}, "
                 f"stored {human_bytes(d['bytes_stored'])}, {d['duration_s']:.1f} s")
    for disk in d["disks"]:
        lines.append(f"  Disk {disk['position']}: {disk['name']} ({disk['disk_key']})")
        lines.append(f"    {human_bytes(disk['size'])} {disk['format']}, level {disk['level']}, "
                     f"changed {disk['blocks_changed']}/{disk['blocks_total']} blocks of "
                     f"{human_bytes(disk['block_size'])}, stored {human_bytes(disk['bytes_stored'])}")
        if disk.get("reason"):
            lines.append(f"    {disk['reason']}")
    lines += [f"  Warning: {w}" for w in d.get("warnings", [])]
    return "\n".join(lines + interrupted_notes(d))


def interrupted_notes(d: dict) -> list[str]:
    return [f"note: {job['message']}" for job in d.get("interrupted_jobs", [])]


def list_result(rows: list, missing: list[str], damaged: list[dict], rollback: str | None,
                unlisted: Exception | None = None) -> dict:
    """The catalog's rows; those whose backup the repository no longer holds are marked `missing`
    (and stay until forgotten explicitly), damaged records and a rolled back store are warned of.
    `unlisted` is why the rows are the repository's records instead (the catalog could not be read)."""
    gone = set(missing)
    backups = [{"backup_id": r.backup_id, "created": r.created, "level": r.level,
                "status": "missing" if r.backup_id in gone else r.status,
                "name": r.name, "consistency": r.consistency, "size": r.size, "bytes_stored": r.bytes_stored,
                "disks": [d.name for d in r.disks]} for r in rows]
    result: dict = {"backups": backups}
    warnings = [f"listed from the repository's records: {unlisted}"] if unlisted is not None else []
    if missing:
        result["missing"] = missing
        warnings.append(f"{len(missing)} backups the catalog knows are missing from the repository "
                        f"({', '.join(missing)}): deleted from the store? `stackvault verify` checks the rest; "
                        "`stackvault forget ID` drops one from the catalog")
    if damaged:
        result["damaged"] = damaged
        ids = ", ".join(d["backup_id"] for d in damaged)
        warnings.append(f"{len(damaged)} backup records in the repository are damaged ({ids}): run "
                        "`stackvault verify`; remove one with `stackvault forget ID`")
    if rollback:
        result["rollback"] = rollback
        warnings.append(rollback)
    if warnings:
        result["warning"] = "; ".join(warnings)
        result["warnings"] = warnings
    return result


def listing(result: dict) -> str:
    rows = result["backups"]
    lines = table(["ID", "CREATED", "NAME", "LEVEL", "SIZE", "STORED", "CONSISTENCY", "STATUS", "DISKS"],
                  [[r["backup_id"], r["created"], (r["name"] or "-")[:32], r["level"], human_bytes(r["size"]),
                    human_bytes(r["bytes_stored"]), r["consistency"] or "-", r["status"], ", ".join(r["disks"])]
                   for r in rows], right=frozenset({4, 5}))
    lines.append(f"{len(rows)} backups")
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines + interrupted_notes(result))


def init(r: dict) -> str:
    sealed = ", encrypted: keep the passphrase safe, without it nothing can be restored" if r.get("encrypted") else ""
    return f"created repository {r['id']} at {r['repo']} (block size {human_bytes(r['block_size'])}{sealed})"


def key_list(r: dict) -> str:
    lines = [f"key slots of {r['repo']}:"]
    for k in r["keys"]:
        kdf = f"scrypt n={k['kdf']['n']} r={k['kdf']['r']} p={k['kdf']['p']}" if k["kdf"] else "-"
        mark = "*" if k["current"] else " "
        lines.append(f" {mark} {k['id']}  {k['created'] or '-':<25} {k['host'] or '-':<20} {kdf}  {k['status']}")
    return "\n".join(lines + ["(* opened this command)"])


def key_added(r: dict) -> str:
    return f"added key slot {r['added']} to {r['repo']}"


def key_removed(r: dict) -> str:
    return f"removed key slot {r['removed']} from {r['repo']}"


def restore(r: dict) -> str:
    """The report, and why it ran without a lock when it did (a full or read-only repository)."""
    done = (f"restored {r['disk']} of backup {r['backup_id']} to {r['target']}: {human_bytes(r['size'])} "
            f"({human_bytes(r['bytes_written'])} of data) in {r['duration_s']:.1f} s")
    return "\n".join([done, *(f"warning: {w}" for w in r.get("warnings", []))])


def verify(r: dict) -> str:
    lines = [f"checked {r['backups_checked']} backups, {r['chunks_checked']} chunks: "
             + ("no errors" if r["ok"] else "ERRORS FOUND")]
    for b in r["bad_records"]:
        lines.append(f"  backup {b['backup']}: its record is damaged: {b['problem']} "
                     f"(remove it with `stackvault forget {b['backup']}`)")
    for b in r["missing_backups"]:
        lines.append(f"  backup {b}: missing from the repository (the catalog knows it; "
                     f"`stackvault forget {b}` drops it)")
    for b in r["bad_indexes"]:
        lines.append(f"  backup {b['backup']} disk {b['disk']}: {b['problem']}")
    for c in r["bad_chunks"]:
        lines.append(f"  chunk {c['chunk']}: {c['problem']}; affects backups {', '.join(c['backups'])}")
    for k in r["bad_key_slots"]:
        lines.append(f"  key slot {k['key']}: {k['problem']}")
    if r["set_aside"]:
        lines.append(f"  {len(r['set_aside'])} damaged chunks were set aside (<id>{'.bad'}): the next Full backup "
                     "of the disks holding them stores them again")
    if r["unchecked_records"]:
        lines.append(f"  note: {len(r['unchecked_records'])} backup records predate record checksums and were "
                     "checked for form only")
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


def copy(r: dict) -> str:
    """`stackvault copy`: one row per backup selected, then what was sent."""
    rows = [[b["backup_id"], b["level"], b["created"], b["result"], str(b["chunks_sent"]),
             human_bytes(b["bytes_sent"])] for b in r["backups"]]
    lines = table(["BACKUP", "LEVEL", "CREATED", "RESULT", "CHUNKS SENT", "SENT"], rows, frozenset({4, 5}))
    how = " (re-encrypted under its keys)" if r["reencrypted"] else ""
    if not rows:
        lines = ["no backup selected: nothing to copy"]
    elif r["backups_copied"]:
        lines.append(f"copied {r['backups_copied']} backups to {r['to']}{how}, skipped {r['backups_skipped']} "
                     f"it held already: sent {r['chunks_sent']} chunks ({human_bytes(r['bytes_sent'])}), "
                     f"{r['chunks_held']} were there")
    else:
        lines.append(f"nothing to send: {r['to']} holds every selected backup ({r['backups_skipped']} skipped)")
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


def prune(r: dict) -> str:
    verb = "would remove" if r["dry_run"] else "removed"
    lines = [f"kept {len(r['kept'])} backups, {verb} {len(r['removed'])}"]
    lines += [f"  {verb}: {b}" for b in r["removed"]]
    if r["removed"] and not r["dry_run"]:
        lines.append("run `stackvault gc` to free their chunks")
    if r.get("damaged"):
        lines.append(f"warning: kept {len(r['damaged'])} backups whose records are damaged "
                     f"({', '.join(r['damaged'])}): run `stackvault verify`; remove one with `stackvault forget ID`")
    return "\n".join(lines)


def forget(r: dict) -> str:
    lines = [f"forgot backup {b}" for b in r["forgotten"]]
    lines += [f"forgot backup {b} (it was missing from the repository; removed from the catalog)"
              for b in r["missing_forgotten"]]
    if r["forgotten"]:
        lines.append("run `stackvault gc` to free their chunks")
    return "\n".join(lines)


def trust_accepted(r: dict) -> str:
    kind = f"encrypted, key {r['key_fingerprint']}" if r["encrypted"] else "plain"
    return (f"this proxy now trusts repository {r['id']} at {r['repo']} ({kind}; newest backup "
            f"{r['newest_backup'] or 'none'})")


def gc(r: dict) -> str:
    verb = "would delete" if r["dry_run"] else "deleted"
    return (f"{verb} {r['chunks_deleted']} chunks ({human_bytes(r['bytes_freed'])}), "
            f"{r['orphan_indexes_deleted']} orphan indexes, {r['temp_files_deleted']} temporary files; "
            f"{r['chunks_kept']} chunks in use")


def state(r: dict) -> str:
    lines = ([f"rebuilt state of {d['disk_key']} from backup {d['backup_id']}" for d in r["disks"]]
             or ["no backups: nothing to rebuild"])
    return "\n".join(lines + ([f"warning: {r['warning']}"] if "warning" in r else []))


def state_saved(r: dict) -> str:
    lines = [f"saved proxy state {r['state_id']} (full): {r['files']} state files"
             f"{', the config' if r['config_saved'] else ''}"
             f"{f', {n} policies written through the API' if (n := r['policies']) else ''}, {human_bytes(r['bytes'])}"]
    return "\n".join(lines + [f"warning: {w}" for w in r["warnings"]])


def state_restored(r: dict) -> str:
    text = f"restored proxy state {r['state_id']}: {r['state_files']} state files"
    return text + (f", config written to {r['config']}" if r["config"] else "")


def recovered(r: dict) -> str:
    lines = [f"catalog rebuilt with {r['catalog']['backups']} backups; working state of {len(r['state']['disks'])} "
             "disks rebuilt from their newest backups"]
    if r["config"]:
        lines.append(f"configuration of saved state {r['state_id']} written to {r['config']}: use it with --config")
    if r["policies"]:
        lines.append(f"policies written through the API put back in the catalog: {', '.join(r['policies'])}")
    if r.get("warning"):
        lines.append(f"warning: {r['warning']}")
    lines += [f"warning: {w}" for w in r.get("warnings", [])]
    return "\n".join(lines)


def catalog(r: dict) -> str:
    kept = f"; the damaged one is kept as {r['damaged_kept_as']}" if r.get("damaged_kept_as") else ""
    text = f"catalog {r['catalog']} rebuilt with {r['backups']} backups from the repository{kept}"
    return text + (f"\nwarning: {r['warning']}" if "warning" in r else "")


def cloud_backup(r: dict) -> str:
    lines = []
    for item in r["servers"] + r["volumes"]:
        kind = "Server" if "server_id" in item else "Volume"
        ident = item.get("server_id") or item.get("volume_id")
        if item["status"] == "failed":
            lines.append(f"{kind} {item['name']} ({ident}): FAILED: {item.get('error')}")
            continue
        lines.append(f"{kind} {item['name']} ({ident})")
        lines.append("\n".join("  " + line for line in backup(item).splitlines()))
        if item.get("base_snapshot"):
            released = f"; released {', '.join(item['released_bases'])}" if item.get("released_bases") else ""
            lines.append(f"  Base kept:        Cinder snapshot {item['base_snapshot']} "
                         f"(next Incremental diffs from it{released})")
    lines += [f"Job {e['name']}: FAILED: {e['error']}" for e in r.get("job_errors", [])]
    for scope in [r["scope"]] if "scope" in r else r.get("scopes", []):
        share = ([f"availability zones {', '.join(scope['availability_zones'])}"]
                 if "availability_zones" in scope else [])
        share += [f"shard {scope['shard']}"] if "shard" in scope else []
        lines.append(f"{'Job ' + scope['job'] + ': ' if 'job' in scope else ''}this proxy's share: {', '.join(share)}; "
                     f"skipped {scope['servers_skipped']} servers and {scope['volumes_skipped']} volumes "
                     "of other proxies")
    counts = {s: sum(1 for i in r["servers"] + r["volumes"] if i["status"] == s)
              for s in ("success", "warning", "failed")}
    lines.append(f"Job {r['job_id']}: {counts['success']} succeeded, {counts['warning']} with warnings, "
                 f"{counts['failed']} failed in {r['duration_s']:.1f} s -- {_STATUS.get(r['status'], r['status'])}")
    return "\n".join(lines)


def cloud_restore(r: dict) -> str:
    if r["kind"] == "server":
        disks = ", ".join(f"{d['disk']} -> {d['kind']} {d['id']}" for d in r["disks"])
        if r.get("in_place"):
            kept = f"; volumes kept as they are: {', '.join(r['kept_volumes'])}" if r["kept_volumes"] else ""
            return f"restored backup {r['backup_id']} into server {r['name']} ({r['id']}) by rebuild: {disks}{kept}"
        return f"restored backup {r['backup_id']} as server {r['name']} ({r['id']}): {disks}"
    return (f"restored disk {r['disk']} as {r['kind']} {r['name']} ({r['id']}), "
            f"{human_bytes(r['bytes_written'])} of data")


def doctor(r: dict) -> str:
    lines = [f"{'SERVER':<24} {'BOOT':<6} {'AGENT':<6} {'QUIESCE':<8} {'NEXT BACKUP':<12} "
             f"POLICY ({r['require_consistency']})"]
    for s in r["servers"]:
        lines.append(f"{s['name'][:24]:<24} {s['boot']:<6} {s['hw_qemu_guest_agent'] or '-':<6} "
                     f"{s['os_require_quiesce'] or '-':<8} {s['consistency']:<12} "
                     f"{'ok' if s['meets_policy'] else 'NOT MET'}")
        lines += [f"  ! {flag}" for flag in s["flags"]]
        lines += [f"  fix: {cmd}" for cmd in s["fix"]]
    lines.append(f"{len(r['servers'])} servers; " + (f"policy not met by {', '.join(r['failing'])}" if r["failing"]
                                                      else "policy met"))
    kept = r.get("retained_bases") or {}
    if kept.get("count"):
        lines.append(f"{kept['count']} Cinder snapshots ({kept['gigabytes']} GB) kept as bases of the next "
                     "changed-block backups (`stackvault cleanup --bases` releases them)")
    elif kept.get("error"):
        lines.append(f"retained base snapshots: cannot list them: {kept['error']}")
    lines += [f"  ! {flag}" for flag in kept.get("flags", [])]
    fixed = r.get("fix_images")
    if fixed is not None:
        if not fixed["asked"]:
            lines.append("no image to fix")
        elif not fixed["confirmed"]:
            lines.append("images left unchanged (not confirmed)")
        else:
            for img in fixed["images"]:
                what = "updated" if img["status"] == "updated" else f"FAILED: {img['error']}"
                lines.append(f"image {img['image_name'] or img['image_id']}: {what}")
            lines.append(f"note: {fixed['note']}")
    return "\n".join(lines)


def guest_hook(r: dict) -> str:
    return r["script"].rstrip("\n")


def cleanup(r: dict) -> str:
    verb = "would delete" if r["dry_run"] else "deleted"
    found = [f"  {kind[:-1]} {o['id']} ({o.get('name') or '-'}, job {o.get('job') or '?'})"
             for kind in ("volumes", "snapshots", "images") for o in r[kind]]
    lines = [f"{verb} {len(found)} leftovers:"] + found if found else ["no leftovers of stackvault jobs in the cloud"]
    released = r.get("bases_released", [])
    if released:
        lines.append(f"{'would release' if r['dry_run'] else 'released'} {len(released)} retained base snapshots:")
        lines += [f"  snapshot {b['id']} of volume {b['volume_id']}" for b in released]
    if r.get("bases"):
        lines.append(f"kept {len(r['bases'])} base snapshots of the next backups (`cleanup --bases` releases them)")
    lines += [f"  could not delete {what}" for what in r.get("failed", [])]
    return "\n".join(lines)


def table(headers: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Lines of a table whose columns line up whatever their values' widths (`right`: the columns of
    numbers, aligned right); the last column is not padded (no trailing blanks)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m{s:02d}s" if hours else f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def _server(job: dict) -> str:
    return job["server"]["name"] or job["server"]["id"] if job.get("server") else "-"


def _first_line(text: str | None) -> str:
    return (text or "").splitlines()[0] if text else ""


def _to_second(iso: str | None) -> str:
    """A catalog time (kept to the microsecond, for order) as people read it."""
    return datetime.fromisoformat(iso).isoformat(timespec="seconds") if iso else "-"


def jobs(result: dict) -> str:
    rows = [[j["job_id"][:12], j["kind"], j["status"], _to_second(j["started"]), _duration(j["duration_s"]), _server(j),
             j["policy"] or "-", j["backup_id"] or "-", _first_line(j["message"])[:80]] for j in result["jobs"]]
    lines = table(["JOB", "KIND", "STATUS", "STARTED", "DURATION", "SERVER", "POLICY", "BACKUP", "MESSAGE"], rows,
                  right=frozenset({4}))
    return "\n".join([*lines, f"{len(rows)} jobs"])


def job(j: dict) -> str:
    lines = [f"Job {j['job_id']}",
             f"  Kind:      {j['kind']}",
             f"  Status:    {_STATUS.get(j['status'], j['status'])} ({j['status']})",
             f"  Started:   {_to_second(j['started'])}   Finished: {_to_second(j['finished'])}   "
             f"Duration: {_duration(j['duration_s'])}",
             f"  Host:      {j['host'] or '-'}"]
    if j.get("server"):
        lines.append(f"  Server:    {j['server']['name']} ({j['server']['id']})")
    if j.get("policy"):
        lines.append(f"  Policy:    {j['policy']}")
    if j.get("backup_id"):
        lines.append(f"  Backup:    {j['backup_id']}")
    if j.get("error"):
        lines.append(f"  Error:     {j['error']}")
        lines.append(f"  Fix:       {j['fix'] or '-'}")
    items = j.get("items") or []
    if items and j["kind"] != "policy":  # a policy run's items are shown with its maintenance below
        lines.append(f"  Items ({len(items)}):")
        for item in items:
            if "disk" in item and "level" in item:
                lines.append(f"    disk {item['disk']}: {item['level']}, {human_bytes(item['size'] or 0)}, "
                             f"read {human_bytes(item['bytes_read'] or 0)}, "
                             f"stored {human_bytes(item['bytes_stored'] or 0)}"
                             + (f" ({item['reason']})" if item.get("reason") else ""))
            elif "disk" in item:
                lines.append(f"    disk {item['disk']}: {human_bytes(item['bytes_written'] or 0)} written to "
                             f"{item['target'] or '-'}")
            else:
                lines.append(f"    backup {item['backup_id']}: {item['action']}")
    if j["kind"] == "policy" and j.get("report"):  # a policy run: its servers, volumes and maintenance
        lines += policy_run(j["report"]).splitlines()[1:]
    lines += [f"  Warning:   {w}" for w in j.get("warnings", [])]
    return "\n".join(lines)


def policy_run(report: dict) -> str:
    """`run-policy`: the run's status and level, then each item and the maintenance that followed."""
    lines = [f"Policy {report['policy']}: {report['status']} ({report['level']}, run for {report['slot']})"]
    for item in report.get("servers", []) + report.get("volumes", []):
        kind = "server" if "server_id" in item else "volume"
        line = f"  {kind} {item.get('name')}: {item['status']}"
        if item.get("backup_id"):
            line += f", backup {item['backup_id']} ({item.get('level')})"
        if item.get("error"):
            line += f": {item['error']}"
        lines.append(line)
    if report.get("error"):
        lines.append(f"  error: {report['error']}")
    if "prune" in report:
        pruned = report["prune"]
        lines.append(f"  prune: {pruned['error']}" if "error" in pruned
                     else f"  prune: {len(pruned['removed'])} forgotten, {pruned['kept']} kept")
    if "gc" in report:
        collected = report["gc"]
        lines.append(f"  gc: {collected.get('error') or str(collected.get('chunks_deleted')) + ' chunks deleted'}")
    if "verify" in report:
        verified = report["verify"]
        lines.append(f"  verify: {verified.get('error') or verified['status']}"
                     + (f" ({verified.get('chunks_read')} chunks read, share {verified['sample']})"
                        if verified.get("sample") else ""))
    if "state" in report:
        lines.append(f"  proxy state: {report['state'].get('error') or 'saved as ' + report['state']['state_id']}")
    return "\n".join(lines)


def server_stopped(result: dict) -> str:
    runs = result["runs_finished"]
    return f"stackvault server stopped after finishing {runs} run{'' if runs == 1 else 's'}"


_C_ESCAPES = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f",
              "\r": "\\r", "\\": "\\\\"}


def guest_name(name: str) -> str:
    """A tenant's file name as `ls -b` shows it: C escapes, octal bytes for anything not printable
    (terminal escape sequences, newlines, bytes that are not UTF-8), so no name can rewrite the
    operator's terminal or pose as another line. JSON output keeps names exact."""
    out = []
    for ch in name:
        if ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif ch.isprintable():  # a surrogate (a byte that is not UTF-8) is not
            out.append(ch)
        else:
            out.append("".join(f"\\{b:03o}" for b in ch.encode("utf-8", "surrogateescape")))
    return "".join(out)


def files_ls(result: dict) -> str:
    lines = []
    for e in result["entries"]:
        link = f" -> {guest_name(e['target'])}" if e.get("target") else ""
        lines.append(f"{e['mode']} {e['uid']:>5} {e['gid']:>5} {e['size']:>12} {e['mtime']:>11} "
                     f"{guest_name(e['path'])}{link}")
    return "\n".join(lines) or "(empty)"


def files_found(result: dict) -> str:
    return "\n".join(map(guest_name, result["paths"])) or "(nothing found)"


def files_extracted(result: dict) -> str:
    return "\n".join(f"{guest_name(x['path'])} -> {guest_name(x['to'])}" for x in result["extracted"])


def nbd_served(result: dict) -> str:
    return (f"served backup {result['backup_id']} disk {result['disk']} on {result['uri']}: "
            f"{result['blocks_fetched']} blocks read from the repository")


def unmounted(result: dict) -> str:
    return f"unmounted {result['mountpoint']} ({result['backups']} backups of {len(result['servers'])} servers)"
