"""The paper's figures (3-8) and Table 1 (`base`)."""

from ltsweep.report.figures.base import *  # noqa: F403
from ltsweep.report.figures.base import __all__  # noqa: F401
