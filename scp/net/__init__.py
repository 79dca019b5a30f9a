"""The DICOM network layer: the pynetdicom AE, association policy, guarded server,
reactors, TLS and the event adapters that call the services."""
