"""feddistill.compression."""
