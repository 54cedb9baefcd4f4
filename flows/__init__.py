"""Prefect flows over the ``pipeline`` stages: ``build``, ``reextract`` and ``release``.

``flows.tasks`` holds the thin tasks; each flow module is a few lines of wiring. The flows run
without a server (Prefect's ephemeral mode) from ``vdv build`` / ``vdv reextract`` /
``vdv release``, or as deployments from ``prefect.yaml`` on a process work pool.
"""

# the models' configuration sections ([train], [psgcn], ...) are known to every flow's
# load_config, whether the flow was started by `vdv` or by a deployment's worker
from models import register_config

register_config()
