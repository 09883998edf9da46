"""The reference processing step: a brain mask and its volume, as a DICOM SEG and an SR.

Real and quick (seconds for a 180-slice head with SimpleITK), for testing and demos; not a
clinical tool. It follows the step contract of :mod:`clinic2cloud_worker.step`.
"""
