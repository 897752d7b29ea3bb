"""Stage 3: validation, estimation and editing (VEE) of readings, vectorised with numpy.

Other folders use `Validator` (and `ThresholdTable` to configure it); `ReferenceValidator` is
the same checks one reading at a time (the executable specification and benchmark baseline).
"""

from gateway.validate.reference import ReferenceValidator
from gateway.validate.status import status_for
from gateway.validate.thresholds import Thresholds, ThresholdTable
from gateway.validate.validator import Validator

__all__ = ["ReferenceValidator", "ThresholdTable", "Thresholds", "Validator", "status_for"]
