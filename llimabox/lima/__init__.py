"""Lima: the embedded VM template and the ``limactl`` driver."""
