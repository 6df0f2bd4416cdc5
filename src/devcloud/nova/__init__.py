"""Emulated Nova (compute API v2.1) and the little of Neutron a restore needs.

Real Nova cannot run here (it needs libvirt, RabbitMQ, placement and a scheduler), so this package
answers the compute API the way Nova does, from its API reference and source: same bodies, status
codes, microversions, task-state transitions and error messages. Instances are booted through
`devcloud.guest.hypervisor.Hypervisor` (real QEMU guests, or disk files in fast mode); images and
volumes are real Glance images and real Cinder volumes, reached the way Nova reaches them.

Modules: `launch` (start the process), `service` (the process: two threaded WSGI servers),
`wsgi` (routing, microversions, Nova's error bodies), `store` (JSON state that survives restarts),
`clients` (Glance and Cinder as Nova calls them), `compute` (the async work a compute host does),
`servers`, `views`, `snapshots`, `attachments`, `misc_api` (flavors, keypairs, limits, ...),
`neutron` (networks, subnets, ports, security groups).
"""
