"""Clinic2Cloud: de-identify and deface brain MRI exports, deliver them to the cloud."""

__version__ = "0.1.0"
