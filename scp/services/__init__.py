"""Application services: what the node does, called by the network layer, HTTP and the CLI.

Services depend on the pure domain (``scp.pipeline``, ``scp.series``) and on ``storage``,
never on the DICOM network layer (``scp.net``) or HTTP (``scp.api``).
"""
