"""Teacher and student architectures, built by name.

Use :func:`build_model`; :data:`MODEL_NAMES` lists the registered names.
"""

from feddistill.models.registry import MODEL_NAMES, buffer_names, build_model, count_parameters

__all__ = ["MODEL_NAMES", "buffer_names", "build_model", "count_parameters"]
