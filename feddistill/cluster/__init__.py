"""feddistill.cluster."""
