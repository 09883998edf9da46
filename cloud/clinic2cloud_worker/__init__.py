"""Clinic2Cloud's cloud side: the worker that processes delivered series.

A delivery is a folder of de-identified DICOM files under a pseudonymous path
(``<site>/<patient>/<study>/<series>[.vN]``) in the delivery container, committed by its
``manifest.json``. The worker takes it (a queue message from Event Grid or from the agent),
verifies every file's SHA-256, runs the site's processing step (input folder in, output
folder out, exit code) and writes the results under the same path in the results container,
their own ``manifest.json`` last. It never sees identity: deliveries hold none.
"""

__version__ = "0.1.0"
