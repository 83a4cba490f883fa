"""Suite-wide settings: property tests draw the same examples on every run (CI stays
deterministic); `--hypothesis-seed` or HYPOTHESIS_PROFILE=explore explore further."""

import os

from hypothesis import settings

settings.register_profile("default", derandomize=True)
settings.register_profile("explore", max_examples=2000, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
