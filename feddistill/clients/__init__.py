"""feddistill.clients."""
