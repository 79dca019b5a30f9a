"""spacing-scp: a DICOM storage node that checks and records pixel and slice spacing."""

__version__ = "0.1.0"
