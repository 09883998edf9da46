"""The DICOM node: PACS and viewers send to the agent over the network (a Storage SCP
into the agent's intake, :mod:`agent.dicomnode.scp`), and results go back to a PACS (a
Storage SCU, :mod:`agent.dicomnode.scu`). TLS files, status snapshots and the ``doctor``
checks live beside them.

Nothing is imported here, so that reading the configuration does not load pynetdicom:
import from the modules (``from agent.dicomnode.scu import send_files, RemoteNode``).
"""
