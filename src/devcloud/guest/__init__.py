"""Guests of the dev cloud: images built from Debian packages and the QEMU hypervisor Nova drives.

`images` builds the kernel, initramfs and qcow2 root disks (with a real qemu-ga) once per content key;
`hypervisor` runs them as `qemu-system-x86_64 -accel tcg` processes and speaks QMP (`qmp`) and the
guest agent protocol (`qga`). Everything here is standard library only, because the emulated Nova
imports it from the services virtualenv.
"""
