"""Read the delivered series as a volume; write the mask as a DICOM SEG, the volume as an SR.

Both objects are made with highdicom from the delivered (pseudonymous) source images: they
copy its patient and study (so they belong to the same study), reference the source series
and instances, and share its Frame of Reference - which is what lets the agent file them
into the original study once it re-identifies them at home.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from clinic2cloud_worker import __version__

MANUFACTURER = "Clinic2Cloud"
MODEL = "reference step: brain mask"
ALGORITHM = hd.AlgorithmIdentificationSequence(
    name="clinic2cloud brain mask", version=__version__,
    family=codes.cid7162.ArtificialIntelligence)
MILLILITER = hd.sr.CodedConcept("mL", "UCUM", "milliliter")


@dataclass
class Series:
    image: sitk.Image
    datasets: list[pydicom.Dataset]  # in the volume's slice order


def read_series(folder: Path) -> Series:
    """The largest classic image series under ``folder``, as a volume and its headers."""
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise ValueError("no DICOM image series in the input folder")
    names_by_id = {uid: reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in ids}
    names = max(names_by_id.values(), key=len)
    if len(names) < 10:
        raise ValueError("the series has fewer than 10 slices; the reference step needs a "
                         "3-D head volume of single-frame images")
    reader.SetFileNames(names)
    image = reader.Execute()
    datasets = [_complete(pydicom.dcmread(n, stop_before_pixels=True)) for n in names]
    return Series(image=image, datasets=datasets)


#: Type 2 attributes of the patient and study modules that highdicom copies: a
#: de-identified source may lack them entirely, present and empty is what DICOM wants.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _complete(ds: pydicom.Dataset) -> pydicom.Dataset:
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _new_uid() -> str:
    return str(hd.UID())


def make_seg(series: Series, mask: np.ndarray) -> pydicom.Dataset:
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Brain",
        segmented_property_category=codes.cid7150.AnatomicalStructure,
        segmented_property_type=codes.SCT.Brain,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=ALGORITHM,
        tracking_uid=_new_uid(), tracking_id="brain mask")
    return hd.seg.Segmentation(
        source_images=series.datasets, pixel_array=mask.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=_new_uid(), series_number=9001,
        sop_instance_uid=_new_uid(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL, software_versions=__version__,
        device_serial_number="1", series_description="Brain mask (Clinic2Cloud)",
        content_label="BRAIN", content_description="automatic brain mask",
        omit_empty_frames=True)


def make_sr(series: Series, seg: pydicom.Dataset, volume_ml: float) -> pydicom.Dataset:
    measurement = hd.sr.Measurement(name=codes.SCT.Volume, value=round(volume_ml, 1),
                                    unit=MILLILITER, algorithm_id=hd.sr.AlgorithmIdentification(
                                        name=ALGORITHM[0].AlgorithmName,
                                        version=ALGORITHM[0].AlgorithmVersion))
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_new_uid(),
                                                     identifier="brain volume"),
        # Built by hand: ReferencedSegment.from_segmentation misses a single segment's
        # identification in the shared functional groups (highdicom 0.28).
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
            segment_number=1, source_series=hd.sr.SourceSeriesForSegmentation(
                series.datasets[0].SeriesInstanceUID)),
        finding_type=codes.SCT.Brain, measurements=[measurement])
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=codes.LN.MRIBrainWWOContrast
        if hasattr(codes.LN, "MRIBrainWWOContrast") else codes.SCT.Brain,
        imaging_measurements=[group])
    return hd.sr.Comprehensive3DSR(
        evidence=[seg, *series.datasets], content=report[0], series_instance_uid=_new_uid(),
        series_number=9002, sop_instance_uid=_new_uid(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True,
        series_description="Brain volume (Clinic2Cloud)")
