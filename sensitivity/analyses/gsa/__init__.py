"""Global sensitivity analysis on top of `sens.ensemble`: Sobol indices, Morris screening
and DGSM from exact gradients; results interchangeable with SALib's (`.to_salib()`)."""

from .dgsm import DGSMResult, dgsm
from .morris import MorrisResult, morris
from .sampling import DISTRIBUTIONS, Range, parse_ranges
from .sobol import SobolResult, sobol

__all__ = ["sobol", "morris", "dgsm", "SobolResult", "MorrisResult", "DGSMResult", "Range",
           "parse_ranges", "DISTRIBUTIONS"]
