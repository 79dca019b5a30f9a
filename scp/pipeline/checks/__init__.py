"""Per-instance rule checks, one module per rulebook rule group.

* :mod:`.spacing`: sections A-B, rules 1, 3, 5, 8, 9 (Decimal String syntax,
  VM, sign, plausible range, Pixel Aspect Ratio) and rule 1 for the other DS
  the node reads.
* :mod:`.projection`: section C, rules 10, 11, 13 (Pixel Spacing Calibration,
  ERMF).
* :mod:`.ultrasound`: section D, rules 15-16 (Sequence of Ultrasound Regions).
* :mod:`.multiframe`: section E, rules 17-18 (Pixel Measures Sequence).
* :mod:`.presence`: rules 5, 12 and 20 (which spacing is given at all).
* :mod:`.geometry`: rule 22 per instance (IPP/IOP).

Each returns :class:`~scp.pipeline.model.Finding` objects and changes
nothing; :func:`scp.pipeline.validate.validate` runs them all.
"""
