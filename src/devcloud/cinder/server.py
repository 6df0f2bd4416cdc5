"""The Cinder process of the dev cloud: cinder-api, cinder-scheduler and cinder-volume together.

Run as ``python -m devcloud.cinder.server --config-file <state>/cinder/cinder.conf`` inside the
services virtualenv (``launch.start`` does that). Real deployments run the three as separate
processes talking over RabbitMQ; here the transport is oslo.messaging's in-memory ``fake:/``,
which only delivers within one process, so the three services share one eventlet hub.
"""

from cinder import monkey_patch; monkey_patch.patch()  # must precede all imports

import logging as python_logging
import sys

import os_brick
from oslo_config import cfg
from oslo_log import log as logging
from oslo_service import service as oslo_service

from cinder import i18n
i18n.enable_lazy()
from cinder.common import config
from cinder.common import constants
from cinder import coordination
from cinder import objects
from cinder import rpc
from cinder import service
from cinder import version

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


class OwnRowService(service.Service):
    """A Cinder service whose heartbeat updates its own row of the ``services`` table.

    ``cinder.service.Service`` keeps the row id in a *class* attribute, which is right when each
    process runs one service; with the scheduler and the volume service in one process the last
    one created would take every heartbeat and the other would look down. Each instance already
    remembers its own id (``origin_service_id``); put it back before each heartbeat. Under eventlet
    nothing yields between that assignment and the parent's read of it.
    """

    def report_state(self) -> None:
        service.Service.service_id = self.origin_service_id
        super().report_state()


def main(argv: list[str]) -> None:
    objects.register_all()
    CONF(argv, project="cinder", version=version.version_string())
    config.set_middleware_defaults()
    logging.setup(CONF, "cinder")
    python_logging.captureWarnings(True)
    os_brick.setup(CONF)
    coordination.COORDINATOR.start()
    rpc.init(CONF)

    backends = [b for b in CONF.enabled_backends or [] if b]
    if not backends:
        sys.exit("cinder.conf has no enabled_backends; the dev cloud needs its sparse-file backend")

    # ServiceLauncher runs every service in this process (ProcessLauncher would fork, and the
    # forked children could not reach each other over fake:/).
    launcher = oslo_service.ServiceLauncher(CONF, restart_method="mutate")
    launcher.launch_service(OwnRowService.create(binary=constants.SCHEDULER_BINARY))
    for backend in backends:
        launcher.launch_service(OwnRowService.create(
            host=f"{CONF.host}@{backend}", service_name=backend,
            binary=constants.VOLUME_BINARY, coordination=True))
    launcher.launch_service(service.WSGIService("osapi_volume"))
    LOG.info("devcloud cinder: api, scheduler and volume (%s) started", ", ".join(backends))
    launcher.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
