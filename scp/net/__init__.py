"""The DICOM network layer (pynetdicom): the AE and its contexts (``ae``), who may
associate (``policy``), the guarded listener (``server``), the event-driven reactors
(``reactor``), TLS (``tls``), the event adapters that call the services (``handlers``),
the forwarding Storage SCU (``scu``) and every use of a pynetdicom private name
(``compat``)."""
