"""Defacing by face replacement: an average face in place of the patient's, brain untouched.

* :class:`DefaceStage` - the pipeline stage (after de-identification, before the verifier);
* :func:`deface_path` - ``clinic2cloud deface IN OUT`` for a DICOM folder or a NIfTI file;
* :class:`DefaceReport` - the numbers of one defacing.
"""

from agent.deface.api import deface_path
from agent.deface.core import DefaceReport
from agent.deface.stage import DefaceStage
from agent.deface.template import find_templates

__all__ = ["DefaceReport", "DefaceStage", "deface_path", "find_templates"]
