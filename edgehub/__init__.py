"""edgehub: a store-and-forward message hub for edge devices.

The package root holds nothing but the version; see docs/architecture.md §2 for the layout.
"""

__version__ = "0.1.0"
