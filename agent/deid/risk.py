"""Objects that may carry identity in their pixels: quarantined unless the site allows them.

Header de-identification cannot remove a name burned into the pixels, a face in a photo or
a document's text. Each rule has a short name; ``[deid] allow_pixel_identity`` may list rule
names, modalities or SOP Class UIDs that this site accepts anyway.

Two rules are *text-checked* rather than refused when the pipeline has the ``pixels``
stage (``allow_pixel_identity`` then holds :data:`TEXT_CHECKED_TOKEN`): secondary captures
/ screen saves ("secondary-capture") and a declared burned-in annotation ("burned-in").
Their risk is text, which the stage (:mod:`agent.pixels`) reads on every frame and redacts,
or withholds when ``[pixels] deliver_captures = false``; :func:`text_risks` tells it which
objects are such (derived and secondary images too). Photos, video, documents and
ultrasound stay refused: their identity is not only text.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from agent.deid.peek import peek


@dataclass(frozen=True)
class PixelRisk:
    """Why an object is refused: the rule's name and the sentence a person reads."""

    rule: str
    reason: str

    @property
    def text_checked(self) -> bool:
        """The pixels stage reads this object's text instead of refusing it wholesale."""
        return self.rule in TEXT_CHECKED


#: Rules whose risk is burned-in text, handled by the pixels stage (OCR and redaction).
TEXT_CHECKED = frozenset({"secondary-capture", "burned-in"})
#: In ``allow_pixel_identity``: the pipeline reads text (the pixels stage), so text-checked
#: rules are not refused by the engine. :func:`agent.pipeline.build_stages` adds it.
TEXT_CHECKED_TOKEN = "text-checked"


_SC = "1.2.840.10008.5.1.4.1.1.7"
# SOP class prefixes (exact or prefix + ".") and why they are risky.
_RISKY_CLASSES: tuple[tuple[str, str, str], ...] = (
    (_SC, "secondary-capture", "is a secondary capture (screen shots may show names)"),
    ("1.2.840.10008.5.1.4.1.1.6", "ultrasound", "is ultrasound (names are often burned in)"),
    ("1.2.840.10008.5.1.4.1.1.3.1", "ultrasound", "is ultrasound (names are often burned in)"),
    ("1.2.840.10008.5.1.4.1.1.77.1", "photo-video", "is a visible-light photo or video"),
    ("1.2.840.10008.5.1.4.1.1.104", "document", "is an encapsulated document (PDF/CDA/3D)"),
    ("1.2.840.10008.5.1.4.1.1.88", "structured-report", "is a structured report (free text)"),
    ("1.2.840.10008.5.1.4.1.1.11", "presentation-state", "is a presentation state (annotations)"),
    ("1.2.840.10008.5.1.4.1.1.66", "raw-data", "is raw data (vendor content, unknown layout)"),
    ("1.2.840.10008.5.1.4.1.1.9", "waveform", "is a waveform (annotations and free text)"),
    ("1.2.840.10008.5.1.1.29", "print", "is a print object (film sheets show names)"),
    ("1.2.840.10008.5.1.1.30", "print", "is a print object (film sheets show names)"),
)
_RISKY_MODALITIES = {
    "US": ("ultrasound", "is ultrasound (names are often burned in)"),
    "IVUS": ("ultrasound", "is ultrasound (names are often burned in)"),
    "SC": ("secondary-capture", "is a secondary capture (screen shots may show names)"),
    "OT": ("secondary-capture", "has modality OT (often screen captures)"),
    "XC": ("photo-video", "is an external camera photo"),
    "ES": ("photo-video", "is an endoscopy photo or video"),
    "GM": ("photo-video", "is a general microscopy photo"),
    "OP": ("photo-video", "is an ophthalmic photo"),
    "DOC": ("document", "is a document"),
    "SR": ("structured-report", "is a structured report (free text)"),
    "PR": ("presentation-state", "is a presentation state (annotations)"),
    "VIDEO": ("photo-video", "is a video"),
}


def _class_matches(uid: str, prefix: str) -> bool:
    return uid == prefix or uid.startswith(prefix + ".")


def pixel_risks(ds: Dataset) -> list[PixelRisk]:
    """Every rule ``ds`` trips (empty when it is safe to de-identify the header only)."""
    out: list[PixelRisk] = []
    burned = peek(ds, "BurnedInAnnotation").upper()
    if burned == "YES":
        out.append(
            PixelRisk("burned-in", "declares burned-in annotation (Burned In Annotation = YES)")
        )
    sop_class = peek(ds, "SOPClassUID")
    for prefix, rule, reason in _RISKY_CLASSES:
        if _class_matches(sop_class, prefix):
            out.append(PixelRisk(rule, reason))
            break
    modality = peek(ds, "Modality").upper()
    if modality in _RISKY_MODALITIES:
        rule, reason = _RISKY_MODALITIES[modality]
        out.append(PixelRisk(rule, reason))
    if any("SCREEN" in v for v in peek(ds, "ImageType").upper().split("\\")):
        out.append(PixelRisk("secondary-capture", "is a screen save (Image Type)"))
    # The SC Equipment module names how an image was digitised or captured. Philips writes
    # the element empty on every acquired MR image: only a value says "captured".
    if peek(ds, "ConversionType").strip():
        out.append(
            PixelRisk("secondary-capture", "is a converted/captured image (Conversion Type)")
        )
    return out


def text_risks(ds: Dataset) -> list[PixelRisk]:
    """The text-checked risks of ``ds``, plus derived/secondary images (MPR, MIP, key
    images, which viewers make with their annotations): every frame is read by OCR."""
    out = [r for r in pixel_risks(ds) if r.text_checked]
    image_type = {v.strip() for v in peek(ds, "ImageType").upper().split("\\")}
    if image_type & {"DERIVED", "SECONDARY"}:
        out.append(PixelRisk("derived", "is a derived or secondary image (Image Type)"))
    return out


def refusal(ds: Dataset, allowed: tuple[str, ...]) -> PixelRisk | None:
    """The first risk not allowed by the site (by rule name, modality or SOP Class UID), nor
    text-checked by the pixels stage when ``allowed`` holds :data:`TEXT_CHECKED_TOKEN`."""
    allow = {a.strip().upper() for a in allowed}
    modality = peek(ds, "Modality").upper()
    sop_class = peek(ds, "SOPClassUID").upper()
    risks = pixel_risks(ds)
    # With the pixels stage in the pipeline, text risks are read by OCR instead; a declared
    # burned-in annotation only on images whose other risks are text too (on an ultrasound
    # or photo a site allowed, it is still refused).
    checked = TEXT_CHECKED_TOKEN.upper() in allow
    other = any(not r.text_checked for r in risks)
    for risk in risks:
        if checked and risk.text_checked and not (risk.rule == "burned-in" and other):
            continue
        if risk.rule.upper() in allow or sop_class in allow:
            continue
        if modality in allow and risk.rule != "burned-in":
            continue  # allowing a modality never allows a declared burned-in annotation
        return risk
    return None
