"""feddistill.server."""
