"""feddistill.distill."""
