"""A local Vertex AI dedicated endpoint, so the unmodified google-cloud-aiplatform SDK runs offline.

``python -m client.emulator`` (see ``__main__``) or, from Python, :class:`Emulator`:

- a REST control plane over HTTP (``aiplatform.init(api_endpoint=..., api_transport="rest")``):
  read endpoints and models, ``endpoint.update(traffic_split=...)``, and the deploy flow
  (``Model.upload``, ``Endpoint.create``, ``endpoint.deploy``/``undeploy`` as long-running
  operations; ``--empty`` starts with nothing deployed, see ``deployments``);
- an HTTPS data plane with a throwaway certificate (``REQUESTS_CA_BUNDLE``) serving
  ``Endpoint.invoke``: ``.../invoke/{path}`` by traffic split or pinned to a deployed model,
  streamed through to the model's server;
- one real server process per deployed model, with the ``AIP_*`` environment Vertex gives a
  container.

It never imports the server (``app``): it runs it as a command.

Example:
    with Emulator() as info:                 # the demo: shapes-a and shapes-b at 50/50
        os.environ.update(info.env())
        aiplatform.init(**info.init_kwargs())
        endpoint = aiplatform.Endpoint(info.endpoint_id)
        endpoint.invoke("/detect", image_bytes, {"Content-Type": "image/png"})
"""

from client.emulator.config import (
    ConfigError,
    DeployedModelConfig,
    EmulatorConfig,
    load,
    validate,
)
from client.emulator.dataplane import MAX_BODY_BYTES
from client.emulator.info import EmulatorInfo
from client.emulator.launcher import Emulator, EmulatorError

__all__ = [
    "MAX_BODY_BYTES",
    "ConfigError",
    "DeployedModelConfig",
    "Emulator",
    "EmulatorConfig",
    "EmulatorError",
    "EmulatorInfo",
    "load",
    "validate",
]
