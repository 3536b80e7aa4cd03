"""Stand-in (benchmarks only): see ``torchvision/_stub.py``."""

__version__ = "0.0.0+stand-in"

from torchvision._stub import stub_getattr

__getattr__ = stub_getattr(__name__)
