"""Stand-in (benchmarks only): see ``torchvision/_stub.py``."""

from torchvision._stub import stub_getattr

__getattr__ = stub_getattr(__name__)
